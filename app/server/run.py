"""`serve`: hold the profile's storage, bind the port, and run uvicorn until told to stop.

The storage is opened as a writer *before* the port is bound: on a local data root, a second
server on the same root is refused naming the first; on PostgreSQL + object storage, the
server becomes one more replica (refused only while maintenance holds the database). The
socket is bound here (a port in use is `PortInUseError`, exit 69, with the hold released) and
its port and URL published (in the lock file, or the replica's row). What a crash left half
done is repaired (`Storage.check`) before the first request. Every write checks that this
process still holds its storage (503 ``lock_lost`` or ``holder_lost`` if not), and a watcher
checks between requests; either way the server logs why, stops, and exits 70. SIGTERM and
SIGINT stop it gracefully: in-flight requests finish, then the hold is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import gc
import hashlib
import logging
import logging.config
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from copy import deepcopy
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

from app.errors import (
    AFTER_FAILED_SYNC,
    EX_SOFTWARE,
    AppError,
    FsyncFailed,
    ListenAddressError,
    ListenAddressUnresolvedError,
    PortInUseError,
    PrintableLines,
    WorkerSettingsChangedError,
    WorkerStartError,
    fork_limits,
    select_for_commands,
    thread_limit,
)
from app.server.committer import Committer
from app.server.factory import create_app
from app.server.protocol import bounded_h11
from app.server.routes_sessions import HealthResponse
from app.server.warm import SessionWarmer, warm_up, worker_threads_at_work
from app.storage import HolderWatch, Storage, open_storage, paused_words

if TYPE_CHECKING:
    import uvicorn

    from app.config import Config

log = logging.getLogger(__name__)

WORKERS_NEED_REMOTE: Final = (
    "--workers above 1 needs a profile on PostgreSQL and object storage: profile {profile!r} "
    "uses a local data root, which has one holder (its lock file), so a second worker "
    "would be refused. Serve it with one worker, or set database_url and blob_url"
)
"""Why a local data root refuses several workers (``app serve --workers N``)."""
_KEEP_ALIVE_SECONDS: Final = 5  # uvicorn's default wait for a connection's next request
_WILDCARDS: Final = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 (names, not a bind)


def bind(host: str, port: int) -> socket.socket:
    """Bind and listen on ``host:port`` (port 0 picks a free one).

    ``SO_REUSEADDR`` lets a restarted server bind at once although its killed predecessor's
    connections linger in TIME_WAIT; it never lets two servers listen on one port.

    Raises:
        PortInUseError: the port is taken (exit 69).
        ListenAddressError: the host does not resolve, is not this machine's, or the port
            may not be bound (exit 69); `ListenAddressUnresolvedError` when its lookup failed
            for now (exit 75).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        if error.errno == socket.EAI_AGAIN:
            reason = f"the host {host!r} could not be looked up now ({error.strerror})"
            raise ListenAddressUnresolvedError(host, port, reason, _LOOKUP_REMEDY) from None
        reason = f"the host {host!r} does not resolve to an address ({error.strerror})"
        raise ListenAddressError(host, port, reason, _HOST_REMEDY) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        sock.close()
        if error.errno != errno.EADDRINUSE:
            raise _unusable(host, port, error) from None
        reason = f"the address is already in use, by {_listener(port)}"
        raise PortInUseError(host, port, reason) from None
    sock.set_inheritable(True)
    return sock


_HOST_REMEDY: Final = (
    "Set the host to an address of this machine (127.0.0.1, 0.0.0.0 for every interface) or "
    "a name that resolves to one, with --host or APP_HOST (`app config` shows where host is "
    "set); the port is set apart, with --port or APP_PORT"
)


_LOOKUP_REMEDY: Final = (
    "Retry once name resolution works (exit 75: a service manager restarts it), or give the "
    "host as an address, which needs no lookup, with --host or APP_HOST"
)


def _unusable(host: str, port: int, error: OSError) -> ListenAddressError:
    """Why binding `host:port` failed, other than a port in use: the address's own fault."""
    reason = f"{os.strerror(error.errno or 0)} ({errno.errorcode.get(error.errno or 0, '?')})"
    if error.errno == errno.EADDRNOTAVAIL:
        reason = f"{host!r} is not an address of this machine, {reason}"
        return ListenAddressError(host, port, reason, _HOST_REMEDY)
    if error.errno == errno.EACCES:
        return ListenAddressError(
            host,
            port,
            f"this process may not bind port {port}, {reason}",
            "A port below 1024 needs root or CAP_NET_BIND_SERVICE (systemd's "
            "AmbientCapabilities=CAP_NET_BIND_SERVICE); or choose a port above 1023 with "
            "--port or APP_PORT",
        )
    return ListenAddressError(host, port, reason, _HOST_REMEDY)


def _listener(port: int) -> str:
    """Who listens on TCP `port` here, as the refusal names it: the pid and command line of
    the process whose socket it is (``/proc/net/tcp*``, then every process's descriptors).

    A port in use said only "another process": on a host where the app's server of another
    profile, a stale one, or an unrelated service had it, the operator had to find it.
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text(encoding="ascii").splitlines()[1:]
            for line in lines:
                fields = line.split()
                # local address "ADDR:PORT" in hex, state 0A is LISTEN, inode the 10th.
                listening = len(fields) > 9 and fields[3] == "0A"
                if listening and int(fields[1].rpartition(":")[2], 16) == port:
                    inodes.add(fields[9])
        except (OSError, ValueError):
            continue
    wanted = {f"socket:[{inode}]" for inode in inodes if inode != "0"}
    found: list[str] = []
    if wanted:
        with contextlib.suppress(OSError), os.scandir("/proc") as processes:
            for process in processes:
                if not process.name.isdigit():
                    continue
                with contextlib.suppress(OSError), os.scandir(f"{process.path}/fd") as fds:
                    if any(str(Path(fd.path).readlink()) in wanted for fd in fds):
                        found.append(process.name)
    if not found:
        return (
            "a process this one cannot see (another user's, or in another network "
            "namespace; `ss -ltnp` as root names it)"
        )
    # Each command line as a shell reads it, cut with "..." (`app.sandbox.command_line`, as
    # a lock's holder is named): its words joined by spaces and cut at 200 characters
    # silently, `python -c 'import time; time.sleep(20)'` was named `python -c import
    # time; time.sleep(2` (red team 75 on the documentation: cli.md says the refusal names
    # the process's command line).
    from app.sandbox import command_line

    described = []
    for pid in found[:3]:
        # A listener stopped with SIGSTOP (a worker of an earlier `serve --workers`, whose
        # `serve` was killed meanwhile) acts on no `kill` until resumed (red team 75).
        paused = "".join(f", {words}" for words in paused_words(int(pid)))
        line = command_line(pid) or "command line unknown"
        described.append(f"pid {pid} ({line}){paused}")
    return ", ".join(described)


def _log_config(level: str) -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["printable"] = {"()": PrintableLines}
    config["handlers"]["default"].setdefault("filters", []).append("printable")
    config["loggers"]["app"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def serve(
    config: Config, *, host: str | None = None, port: int | None = None, workers: int = 1
) -> None:
    """Run the server until SIGTERM or SIGINT; hold the profile's storage all along.

    Args:
        config: the configuration of the profile to serve.
        host: the address to listen on; ``config.host`` if ``None``.
        port: the port; ``config.port`` if ``None`` (0 picks a free one).
        workers: server processes sharing the socket, each a replica with its own hold on
            the database (PostgreSQL + object storage only; see :func:`serve_workers`).

    Raises:
        DataRootInUseError: another process holds the data root (exit 75).
        MaintenanceRunningError: a maintenance command holds the database (exit 75).
        PortInUseError: the port is taken (exit 69); the lock is released first.
        ProfileStampMismatchError: the root belongs to another profile (exit 78).
        LockLostError: the lock file was deleted or replaced while serving; the server
            stopped instead of sharing its root (exit 70).
        HolderLostError: the replica's database connection was lost while serving; the
            server stopped, since maintenance could take the database (exit 70).
        ValueError: ``workers`` above 1 on a local data root (the command line refuses it
            first, as a usage error).
    """
    host = config.host if host is None else host
    port = config.port if port is None else port
    logging.config.dictConfig(_log_config(config.log_level))
    if workers > 1:
        serve_workers(config, host=host, port=port, workers=workers)
        return
    wanted = f"start the server on {host}:{port}"
    with open_storage(config, writer=True, kind="server", wanted=wanted) as store:
        # From the moment the port listens, a stop is graceful: a SIGTERM in the start-up
        # check killed the process (143), a Ctrl-C exited 130 as an interrupted command would.
        stop = _StopRequest()
        restore_signals = stop.install()
        try:
            sock = bind(host, port)
            try:
                _run(config, store, sock, host, stop)
            finally:
                sock.close()
        finally:
            restore_signals()
    if stop.restart_signal is not None:
        # After the hold is released: a service manager restarts a process that exits
        # non-zero (systemd's Restart=on-failure), which is the reload the sender wanted.
        sys.exit(128 + stop.restart_signal)


def _start_up_check(store: Storage) -> None:
    """The start-up's repair of what a crash of the last holder left, each finding logged."""
    try:
        findings = store.check(repair=True, thorough=False).findings
    except FsyncFailed as failed:
        # The check stopped at it, its repairs logged (`Store.check`); this process changes
        # nothing more, as after any failed fsync: it serves reads, and GET /health and every
        # change say why, until a restart once the disk is mended and the machine rebooted
        # (red team 48; the reboot, red team 62: `AFTER_FAILED_SYNC`).
        log.error(
            "start-up check stopped: an fsync on the data root's filesystem failed (%s); "
            "this server serves reads and refuses every change until it is restarted, and a "
            "restart alone reads what the kernel dropped as written: %s",
            failed.strerror or failed,
            AFTER_FAILED_SYNC,
        )
        findings = []
    for finding in findings:
        log.warning(
            "start-up check: %s %s: %s; %s%s",
            finding.problem,
            finding.target,
            finding.detail,
            "" if finding.repaired else "NOT repaired: ",
            finding.repair,
        )


def _run(
    config: Config, store: Storage, sock: socket.socket, host: str, stop: _StopRequest
) -> None:
    """Serve on a bound socket until told to stop; raise the store's lost error if it lost
    its hold meanwhile."""
    import uvicorn

    log_config = _log_config(config.log_level)
    bound_port: int = sock.getsockname()[1]
    address: str = sock.getsockname()[0]
    store.publish(port=bound_port, url=_public_url(host, bound_port), address=address)
    # Whatever a crash of the last holder left half done is finished or undone before the
    # first request; the audit log says what was done.
    _start_up_check(store)
    # A kept session's answer trusted on the kernel's change events rather than its stat
    # calls (app.store.watch); the remote store keeps no answers and has no such method.
    watch_sessions = getattr(store, "watch_sessions", None)
    if watch_sessions is not None:
        watch_sessions()
    application = create_app(store, config)

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            # uvicorn takes SIGINT and SIGTERM whatever it finds: one the server was
            # started with ignored stays ignored (`_ignored`).
            ignored = _ignored(uvicorn.server.HANDLED_SIGNALS)
            with super().capture_signals():
                for sig in ignored:
                    signal.signal(sig, signal.SIG_IGN)
                yield

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # Whether a second SIGINT forced the stop: a request it cuts is told so.
            application.state.stop_forced = lambda: self.force_exit
            _publish_stopping(store, config)
            await super().shutdown(sockets)

    server = Server(
        uvicorn.Config(
            application,
            log_config=log_config,
            log_level=config.log_level,
            lifespan="off",
            timeout_graceful_shutdown=config.shutdown_grace_seconds,
            # No wait for a client is longer than request_idle_seconds, the one between two
            # requests of a connection included. Typed int, used as call_later's float.
            timeout_keep_alive=min(_KEEP_ALIVE_SECONDS, config.request_idle_seconds),  # type: ignore[arg-type]
            server_header=False,
            # Every answer, stored by no cache: without it a browser kept a download (its
            # Last-Modified heuristic: a tenth of the file's age) and answered a GET after an
            # acknowledged replace or delete with the old bytes, never asking (the API's own
            # /docs page, red team 76 on the server); a shared cache in front (Varnish's
            # default TTL) did so for a page of sessions, a session or its 404. Added by
            # uvicorn to every answer, the protocol's and the application's alike.
            headers=[("Cache-Control", "no-store")],
            # No WebSocket: the protocol answers an Upgrade as a plain request
            # (`_should_upgrade`), and uvicorn need not import a WebSocket library.
            ws="none",
            http=bounded_h11(
                config.max_header_bytes,
                config.request_idle_seconds,
                config.request_seconds,
                # GET /health, answered in the protocol: not queued behind the event loop's turn
                health=HealthResponse(config, store),
            ),
            h11_max_incomplete_event_size=config.max_header_bytes,
        )
    )
    lost: list[str] = []

    def on_lost(reason: str) -> None:
        if lost:
            return  # the watcher and a refused write may both report it
        lost.append(reason)
        log.error("stopping: %s", store.lost_error(reason))
        server.should_exit = True

    application.state.on_lock_lost = on_lost
    # A local root this start created (the remote store has no such attribute). On a first
    # deploy that is expected; anywhere else it is a mistyped path, serving nothing.
    if getattr(getattr(store, "root", None), "created", False):
        log.warning(
            "data root %s did not exist: created it, empty, for profile %s (data_root from "
            "%s). If this profile's sessions are elsewhere, stop this server and correct "
            "data_root; `app config` shows where it is set",
            store.location,
            config.profile,
            config.sources.get("data_root", "built-in default"),
        )
    if in_memory := getattr(store, "in_memory", None):
        # Every create, upload and delete was acknowledged, fsynced, and gone at the next
        # reboot, without a word (red team 42).
        log.warning(
            "data root %s is on %s, which lives in memory: every session and file this server "
            "acknowledges is lost at the next reboot (or unmount). Unless that is what you "
            "want, stop this server and point data_root of profile %s at a directory on a "
            "disk (`app config` shows where it is set)",
            store.location,
            in_memory,
            config.profile,
        )
    log.info(
        "serving profile %s from %s on %s (pid %d)",
        config.profile,
        store.location,
        _url(host, bound_port),
        os.getpid(),
    )
    server.config.load()  # what server.run does first: the protocol, the wrapped application

    at_work: list[int | None] = []
    committer: Committer | None = getattr(application.state, "committer", None)

    async def warm_then_serve() -> None:
        # The first request of each kind is paid for here, before the socket is served
        # (app.server.warm): a server that answers is ready.
        await warm_up(server.config.loaded_app, application, config)
        # Everything built so far lives as long as the server: out of the cyclic
        # collector's sight, so that its full collections scan only what requests leave
        # behind. Each one scanned the whole start-up heap (about 75,000 objects, tens of
        # ms on the event loop).
        gc.freeze()
        warmer.start()  # the sessions' answers, kept in the background (app.server.warm)
        await server.serve(sockets=[sock])
        # Still in the loop: which worker threads run a request's work, rather than wait for
        # one (the warm-up's are kept, and idle ones end with the loop).
        threads = worker_threads_at_work()
        creates = 0 if committer is None else committer.stop()
        at_work.append(None if threads is None else threads + creates)

    watcher = _watch(config, store, on_lost)
    warmer = SessionWarmer(store)
    stop.serving(server)
    try:
        # What server.run does, with the warm-up first, in the same event loop.
        with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
            runner.run(warm_then_serve())
        _wait_for_request_threads(store.location, at_work[0] if at_work else None, committer)
    finally:
        warmer.stop()
        watcher.stop()
    if lost:
        raise store.lost_error(lost[0])
    log.info("stopped; releasing the hold on %s", store.location)


def _watch(config: Config, store: Storage, on_lost: Callable[[str], object]) -> HolderWatch:
    """Start the thread that watches the hold; a process at its limit of threads is refused
    clearly (exit 75) before it serves a request, and its hold is released as it leaves."""
    try:
        return store.watch(config.lock_check_seconds, on_lost)
    except RuntimeError as error:
        refused = thread_limit(error, f"serving profile {config.profile} from {store.location}")
        if refused is None:
            raise
        raise refused from None


def _wait_for_request_threads(
    location: str, at_work: int | None, committer: Committer | None = None
) -> None:
    """Return once no worker thread (nor committer thread) runs a request's work any more.

    Past the shutdown grace uvicorn cancels the requests still running, but not the worker
    threads they wait on: a create's rename, an upload's commit go on. Released before they
    end, the hold would let a maintenance command take the data root while this process
    still writes to it. The threads left are those interpreter exit waits for (non-daemon:
    anyio's workers, which leave once their job is done since the event loop ended; the idle
    ones, which the warm-up started and keeps, leave at once). ``at_work``: how many of them
    ran a request's work when the loop ended (`app.server.warm.worker_threads_at_work`),
    and the creates the committer had in hand; ``None`` if that could not be told, then
    every thread left is counted.
    """
    current = threading.current_thread()
    running = [t for t in threading.enumerate() if t is not current and not t.daemon]
    busy = len(running) if at_work is None else at_work
    if busy:
        log.warning(
            "waiting for %d request(s) still at work in worker threads before releasing the "
            "hold on %s",
            busy,
            location,
        )
    for thread in running:
        thread.join()
    if committer is not None:  # its creates (app.server.committer), counted in ``at_work``
        committer.join()


# --- several worker processes (the remote backend) -------------------------------------------


def serve_workers(config: Config, *, host: str, port: int, workers: int) -> None:
    """Serve with ``workers`` processes on one socket, each one replica of its own.

    Not uvicorn's ``--workers`` supervisor: its workers build the application in the child
    from an import string and never tell the parent why they stopped, and it restarts a dead
    worker; here each worker is a whole ``serve`` (its own holder row and advisory lock, its
    own watcher, exit 70 when its connection is lost), and when one stops, all stop, with its
    exit code, as a single server would (a process manager restarts the service).

    Raises:
        ValueError: the profile uses a local data root (:data:`WORKERS_NEED_REMOTE`).
        SystemExit: a worker stopped with an error; its exit code (it logged why).
    """
    import multiprocessing
    from multiprocessing.connection import wait

    from app.config import REMOTE

    if config.backend != REMOTE:
        raise ValueError(WORKERS_NEED_REMOTE.format(profile=config.profile))
    sock = bind(host, port)
    # Forked from this process, as gunicorn's `--preload` forks its workers, where that is
    # safe: this process has imported the server already (the command's import of
    # app.server) and opened no storage and no connection (each worker opens its own), and
    # no other thread runs in it (a fork copies only the forking thread, and a lock another
    # thread held would stay held in the child). Each worker was a spawned interpreter that
    # imported all of it again, about 0.7 s of CPU of its 0.8 (bench/serve_workers.py).
    # Where another thread runs (a library's, a program that embeds the app), spawn.
    forked = threading.active_count() == 1
    context = (
        multiprocessing.get_context("fork") if forked else multiprocessing.get_context("spawn")
    )
    # Each worker serves with the settings `serve` read: a worker that loaded them again
    # read the files as they were when it started, and a settings file changed meanwhile
    # gave two workers different settings on one port (red team 75 on this session's
    # leftovers). A forked worker is handed serve's own `Config` (immutable, and not pickled
    # under fork); a spawned one loads them again and checks them against serve's digests.
    given: Config | dict[str, str] = config if forked else setting_digests(config)
    processes = [
        context.Process(
            target=_worker,
            args=(config.profile, config.profile_source, host, sock, os.getpid(), given),
            name=f"app-worker-{n}",
        )
        for n in range(workers)
    ]
    stopping: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: stopping.append(signum))
        for sig in _STOP_SIGNALS
        if sig not in _ignored([sig])
    }
    woken = wake = -1
    previous_wakeup = None
    code = 0
    try:
        _start(processes, _url(host, sock.getsockname()[1]))
        # A signal wakes the wait below at once (its handler's byte on this pipe): without
        # it, the wait noticed a SIGTERM only when its 0.5 s timeout ran out (PEP 475
        # retries the select after the handler ran), so each stop and restart of `serve
        # --workers` took 0.25 s more on average. The timeout stays as a fallback. Made
        # once the workers are forked, so that none holds a copy.
        woken, wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous_wakeup = signal.set_wakeup_fd(wake, warn_on_full_buffer=False)
        log.info(
            "started %d workers on %s (pids %s), each a replica of profile %s",
            workers,
            _url(host, sock.getsockname()[1]),
            ", ".join(str(p.pid) for p in processes),
            config.profile,
        )
        while not stopping:
            ended = wait([woken, *(p.sentinel for p in processes)], timeout=0.5)
            if woken in ended:
                with contextlib.suppress(BlockingIOError):
                    os.read(woken, 512)
            first = next((p for p in processes if p.sentinel in ended), None)
            if first is not None:
                first.join()
                code = first.exitcode or 0
                _log_worker_stopped(first.pid, code)
                break
    finally:
        if previous_wakeup is not None:
            signal.set_wakeup_fd(previous_wakeup)
            os.close(woken)
            os.close(wake)
        # Those started only: a start refused (`_start`) leaves the rest unstarted, which
        # multiprocessing refuses to join (its AssertionError hid the refusal).
        started = [process for process in processes if process.pid is not None]
        for process in started:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
                # And SIGCONT, as systemd's stop sends both: a worker stopped by a signal
                # (SIGSTOP, Ctrl-Z's SIGTSTP) takes SIGTERM only once it runs again, and
                # `serve` waited for it here for ever, silently, its siblings gone and it
                # holding the database (red team 75 on serve --workers).
                os.kill(process.pid, signal.SIGCONT)
        _join_saying_who_waits(started)
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code:
        sys.exit(code if code > 0 else EX_SOFTWARE)
    if stopping and stopping[0] in _RESTART_SIGNALS:
        # As one server does (`_StopRequest`): stopped gracefully, for a restart.
        log.warning(
            "stopped on %s: exits %d for its service manager to start it again",
            signal.Signals(stopping[0]).name,
            128 + stopping[0],
        )
        sys.exit(128 + stopping[0])


#: How long `serve` waits for its workers to stop before it says which one it waits for.
_WAIT_BEFORE_SAYING_SECONDS: Final = 1.0


def _join_saying_who_waits(started: list[Any]) -> None:
    """Wait for the workers told to stop; say once which one still runs and why, if a
    debugger or a frozen cgroup keeps it from acting on its SIGTERM (and SIGCONT, which
    resumes neither): `serve` waited for it silently, for ever (red team 75 on this
    session's leftovers)."""
    deadline = time.monotonic() + _WAIT_BEFORE_SAYING_SECONDS
    for process in started:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in started:
        words = paused_words(process.pid) if process.is_alive() else []
        if words:
            log.warning(
                "waiting for worker %d to stop, told %g s ago (SIGTERM): it is %s; `app serve` "
                "exits, and frees the port, once it has stopped",
                process.pid, _WAIT_BEFORE_SAYING_SECONDS, "; ".join(words),
            )  # fmt: skip
    for process in started:
        process.join()


def _log_worker_stopped(pid: int | None, code: int) -> None:
    if code - 128 in _RESTART_SIGNALS:
        log.warning(
            "worker %s stopped on %s (exit %d); stopping the others, and exits %d for its "
            "service manager to start it again",
            pid, signal.Signals(code - 128).name, code, code,
        )  # fmt: skip
    elif code < 0:
        # multiprocessing's exit code of a worker a signal killed: "stopped (exit -9)" named
        # neither the signal nor what serve then exits with (red team 74 on regress, round b).
        killed = signal.Signals(-code)
        by = (
            " (the kernel's OOM killer, `journalctl -k` shows, or a `kill -9`)"
            if killed == signal.SIGKILL
            else ""
        )
        log.error(
            "worker %s was killed by %s%s; stopping the others, and exits %d for its service "
            "manager to start it again",
            pid, killed.name, by, EX_SOFTWARE,
        )  # fmt: skip
    else:
        log.error("worker %s stopped (exit %s); stopping the others", pid, code)


def _worker(
    profile: str,
    profile_source: str,
    host: str,
    sock: socket.socket,
    parent: int,
    given: Config | dict[str, str],
) -> None:
    """One worker of :func:`serve_workers`: a replica on the inherited socket, with
    ``serve``'s settings (`given`: its `Config`, or in a spawned worker its digests)."""
    from app import config as appconfig

    _signals_as_started()
    _stop_with_parent(parent)
    if profile_source == "--profile":
        # As the command's own process does (`app.cli.load_config`): a spawned worker starts
        # with none, and its log named every `app ...` without the profile (a worker refused
        # the database said to run `app data check --repair`, development's as written: red
        # team 63 on regress).
        select_for_commands(profile)
    stop = _StopRequest()
    try:
        if isinstance(given, dict):
            config = appconfig.load(profile, profile_source=profile_source, serving=True)
            check_same_settings(config, given, parent)
        else:
            config = given
        logging.config.dictConfig(_log_config(config.log_level))
        wanted = f"start worker {os.getpid()} on {host}:{sock.getsockname()[1]}"
        with open_storage(config, writer=True, kind="server", wanted=wanted) as store:
            restore_signals = stop.install()
            try:
                _run(config, store, sock, host, stop)
            finally:
                restore_signals()
    except AppError as error:
        # The error, not its text: a log line leaves the text of its arguments as it is
        # (`PrintableLines`), and its message's own `app ...` are given the profile.
        log.error("worker %d: %s", os.getpid(), error)
        sys.exit(error.exit_code)
    if stop.restart_signal is not None:
        # As a single server: a `kill -HUP` (or `pkill -USR1 -f 'app serve'`) that reached a
        # worker exited 0, so `serve` exited 0 and Restart=on-failure left the service
        # stopped (red team 38).
        sys.exit(128 + stop.restart_signal)


def setting_digests(config: Config) -> dict[str, str]:
    """A digest of each of `config`'s values (its warnings and their sources aside): what a
    spawned worker compares its own settings with, secrets included, none of them said."""
    digests = {}
    for item in dataclasses.fields(config):
        if item.name in ("warnings", "sources"):
            continue
        value = getattr(config, item.name)
        if isinstance(value, Mapping):
            value = sorted((str(key), str(each)) for key, each in value.items())
        elif isinstance(value, frozenset):
            value = sorted(value)  # a set's order differs between interpreters (hashing)
        digests[item.name] = hashlib.sha256(repr(value).encode()).hexdigest()
    return digests


def check_same_settings(config: Config, wanted: dict[str, str], parent: int) -> None:
    """Refuse a spawned worker whose settings are not those `serve` read.

    Raises:
        WorkerSettingsChangedError: a settings file or value changed in between (exit 75).
    """
    own = setting_digests(config)
    changed = sorted(
        name for name in own.keys() | wanted.keys() if own.get(name) != wanted.get(name)
    )
    if changed:
        raise WorkerSettingsChangedError(
            os.getpid(), parent, config.profile, ", ".join(changed), str(config.settings_dir)
        )


_PR_SET_PDEATHSIG: Final = 1


def _start(processes: list[Any], url: str) -> None:
    """Start the workers, the stop signals blocked meanwhile: one that comes while a worker
    is forked waits, in this process and in the worker, until the worker has put back the
    handlers a fresh process has (`_signals_as_started`); this process's handler, copied
    into the worker, would have taken it there and not stopped the worker.

    Raises:
        WorkerStartError: the system refused a worker a process (a fork's EAGAIN at the
            service's TasksMax=, ENOMEM); those started before it are stopped by the caller.
    """
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        for number, process in enumerate(processes, 1):
            try:
                process.start()
            except OSError as error:
                pids = [str(p.pid) for p in processes[: number - 1]]
                started = (
                    f"The {'workers' if len(pids) > 1 else 'worker'} started before it (pid "
                    f"{', '.join(pids)}) {'were' if len(pids) > 1 else 'was'} stopped, before "
                    "serving a request"
                    if pids
                    else "No worker was started"
                )
                raise WorkerStartError(
                    number,
                    len(processes),
                    url,
                    f"{os.strerror(error.errno or 0)}, "
                    f"{errno.errorcode.get(error.errno or 0, '?')}",
                    started,
                    fork_limits(error.errno),
                ) from None
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _signals_as_started() -> None:
    """The stop signals' handlers a fresh interpreter has, and those signals unblocked.

    A worker forked from ``serve`` starts with ``serve``'s handlers (which only note the
    signal) and with the signals blocked (`serve_workers`); one that comes meanwhile is
    taken here, by the default action, as it was in a spawned worker before it installed
    its own. A signal ``serve`` was started with ignored stays ignored (`_ignored`).
    """
    for sig in _STOP_SIGNALS:
        if signal.getsignal(sig) != signal.SIG_IGN:
            default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, default)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def _stop_with_parent(parent: int) -> None:
    """Have the kernel send this worker SIGTERM (a graceful stop) when ``serve`` dies.

    A ``serve --workers`` killed with SIGKILL (by the OOM killer, a ``kill -9``, a process
    manager that signals only its child) left its workers serving and holding the database
    for ever, orphans on the port a restart then could not bind (red team 38). Linux only;
    elsewhere the service manager's stop of the whole group is what ends them.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        # It died before the request above: the kernel will not send it now.
        os.kill(os.getpid(), signal.SIGTERM)


def _public_url(host: str, port: int) -> str:
    """The URL other machines can reach this server at, as far as this process knows."""
    return _url(socket.gethostname() if host in _WILDCARDS else host, port)


def _url(host: str, port: int) -> str:
    """``http://host:port``, an IPv6 address in brackets: the start-up's line said
    ``http://::1:8000``, which is no URL (red team 51; `app.lock.http_url` for commands)."""
    return (
        f"http://[{host}]:{port}"
        if ":" in host and not host.startswith("[")
        else f"http://{host}:{port}"
    )


#: Signals an operator sends a server out of habit from other servers (reload, reopen logs).
_RESTART_SIGNALS: Final = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
#: Every signal that stops `serve --workers` and its workers.
_STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT, *_RESTART_SIGNALS)


def _ignored(signals: Iterable[int]) -> list[int]:
    """Those of `signals` this process was started with ignored (or ignores now).

    ``app serve &`` in a script, whose shell starts it with SIGINT ignored for the terminal's
    Ctrl-C to leave it running (or a supervisor that ignores one on purpose): the server
    took SIGINT and SIGTERM whatever it found, as uvicorn does, and the script's Ctrl-C
    stopped it, and its workers (red team 60 on regress, the late merges), where a command
    keeps such a signal ignored (`app.cli._listened`). It stays ignored here too, and in a
    worker, which inherits it."""
    return [sig for sig in signals if signal.getsignal(sig) is signal.SIG_IGN]


class _StopRequest:
    """SIGTERM and SIGINT, caught from before the port listens, as a request to stop the
    server, around uvicorn's own handling.

    uvicorn handles both only while it serves (graceful shutdown), then restores the handlers
    it found and raises the signal again: with the defaults that would kill the process
    before it releases the lock in order (truncate the holder JSON, unlock). Before it
    serves, the start-up check and the warm-up run (seconds under load): a signal then was
    ignored, and a server told to stop, or a worker of ``serve --workers`` whose sibling
    stopped, served on for ever (stops 25-27's flake). So a signal sets ``should_exit``,
    which uvicorn checks before it serves the first request, on the server once there is
    one, and a signal that came before it is handed on; after uvicorn, it is a no-op.
    """

    def __init__(self) -> None:
        self.requested = False
        self.server: uvicorn.Server | None = None
        #: SIGHUP, SIGUSR1 or SIGUSR2, if one stopped the server: it exits 128 + its number.
        self.restart_signal: int | None = None

    def install(self) -> Callable[[], None]:
        """Catch the signals; return the function that restores the handlers found."""

        def stop(signum: int, frame: FrameType | None) -> None:
            self.requested = True
            if self.server is not None:
                self.server.should_exit = True

        def restart(signum: int, frame: FrameType | None) -> None:
            # `kill -HUP` to reload the settings, `kill -USR1` to reopen logs (logrotate's
            # habit): by default each killed the server at once, requests in flight cut and
            # nothing logged. There is nothing to reload in place or to reopen (the log
            # goes to standard output), so it stops as for SIGTERM, saying so.
            if self.restart_signal is None:
                self.restart_signal = signum
                log.warning(
                    "received %s: this server does not reload its settings or reopen files "
                    "in place, so it stops gracefully, as for SIGTERM, and exits %d for its "
                    "service manager to start it again (`systemctl restart app` does both)",
                    signal.Signals(signum).name,
                    128 + signum,
                )
            stop(signum, frame)

        stops, restarts = (signal.SIGTERM, signal.SIGINT), _RESTART_SIGNALS
        ignored = _ignored((*stops, *restarts))
        previous = {sig: signal.signal(sig, stop) for sig in stops if sig not in ignored}
        previous |= {sig: signal.signal(sig, restart) for sig in restarts if sig not in ignored}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def serving(self, server: uvicorn.Server) -> None:
        """From now on a signal stops `server`; one that came already stops it at once."""
        self.server = server
        if self.requested:
            server.should_exit = True


def _publish_stopping(store: Storage, config: Config) -> None:
    """Say in the holder's details that this server is stopping, while it finishes the
    requests in flight and still holds the root. A start meanwhile was refused with "stop it
    (kill <pid>)", and a second signal cuts those requests (red team 44)."""
    try:
        store.publish(
            stopping_since=datetime.now(UTC).isoformat(timespec="seconds"),
            shutdown_grace_seconds=config.shutdown_grace_seconds,
        )
    except Exception as error:  # the stop goes on: its holder is then named as serving
        log.warning("could not publish that this server is stopping: %s", error)
