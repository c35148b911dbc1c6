"""`serve`: hold the data root, bind the port, and run uvicorn until told to stop.

The data root is opened as a writer *before* the port is bound, so a second server on the
same root is refused naming the first; the socket is bound here (a port in use is
`PortInUseError`, exit 69, with the lock released) and its port published in the lock file.
What a crash of the previous holder left half done is repaired (`Store.check`) before the
first request. Every write checks that the lock file is still the one it locked (503
``lock_lost`` if not), and a `LockWatcher` checks between requests; either way the server
logs why, stops, and exits 70. SIGTERM and SIGINT stop it gracefully: in-flight requests
finish, then the lock is released.
"""

from __future__ import annotations

import errno
import logging
import logging.config
import os
import signal
import socket
from collections.abc import Callable
from copy import deepcopy
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

from app.errors import PortInUseError
from app.server.factory import create_app
from app.server.protocol import bounded_h11
from app.storage import open_storage

if TYPE_CHECKING:
    from app.config import Config

log = logging.getLogger(__name__)

_GRACEFUL_SHUTDOWN_SECONDS: Final = 30


def bind(host: str, port: int) -> socket.socket:
    """Bind and listen on ``host:port`` (port 0 picks a free one).

    ``SO_REUSEADDR`` lets a restarted server bind at once although its killed predecessor's
    connections linger in TIME_WAIT; it never lets two servers listen on one port.

    Raises:
        PortInUseError: the port is taken, or the address cannot be used (exit 69).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise PortInUseError(host, port, f"cannot resolve {host!r}: {error.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        sock.close()
        reason = (
            "the address is already in use"
            if error.errno == errno.EADDRINUSE
            else os.strerror(error.errno or 0)
        )
        raise PortInUseError(host, port, reason) from None
    sock.set_inheritable(True)
    return sock


def _log_config(level: str) -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = deepcopy(LOGGING_CONFIG)
    config["loggers"]["app"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def serve(config: Config, *, host: str | None = None, port: int | None = None) -> None:
    """Run the server until SIGTERM or SIGINT; hold the data root's lock all along.

    Args:
        config: the configuration of the profile to serve.
        host: the address to listen on; ``config.host`` if ``None``.
        port: the port; ``config.port`` if ``None`` (0 picks a free one).

    Raises:
        DataRootInUseError: another process holds the data root (exit 75).
        PortInUseError: the port is taken (exit 69); the lock is released first.
        ProfileStampMismatchError: the root belongs to another profile (exit 78).
        LockLostError: the lock file was deleted or replaced while serving; the server
            stopped instead of sharing its root (exit 70).
    """
    import uvicorn

    host = config.host if host is None else host
    port = config.port if port is None else port
    log_config = _log_config(config.log_level)
    logging.config.dictConfig(log_config)
    wanted = f"start the server on {host}:{port}"
    with open_storage(config, writer=True, kind="server", wanted=wanted) as store:
        sock = bind(host, port)
        try:
            bound_port: int = sock.getsockname()[1]
            store.publish(port=bound_port)
            # Whatever a crash of the last holder left half done is finished or undone
            # before the first request; the audit log says what was done.
            for finding in store.check(repair=True, thorough=False).findings:
                log.warning(
                    "start-up check: %s %s: %s; %s%s",
                    finding.problem,
                    finding.target,
                    finding.detail,
                    "" if finding.repaired else "NOT repaired: ",
                    finding.repair,
                )
            application = create_app(store, config)
            server = uvicorn.Server(
                uvicorn.Config(
                    application,
                    log_config=log_config,
                    log_level=config.log_level,
                    lifespan="off",
                    timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
                    server_header=False,
                    http=bounded_h11(config.max_header_bytes, config.request_idle_seconds),
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
            log.info(
                "serving profile %s from data root %s on http://%s:%d (pid %d)",
                config.profile,
                store.location,
                host,
                bound_port,
                os.getpid(),
            )
            watcher = store.watch(config.lock_check_seconds, on_lost)
            stop_signals = _quiet_signals()
            try:
                server.run(sockets=[sock])
            finally:
                watcher.stop()
                stop_signals()
        finally:
            sock.close()
        if lost:
            raise store.lost_error(lost[0])
        log.info("stopped; releasing the lock on %s", store.location)


def _quiet_signals() -> Callable[[], None]:
    """Make SIGTERM and SIGINT no-ops around uvicorn; return the function that undoes it.

    uvicorn handles both while it runs (graceful shutdown), then restores the handlers it
    found and raises the signal again. With the defaults that would kill the process before
    it releases the lock in order (truncate the holder JSON, unlock), so the handlers it
    finds are these no-ops instead.
    """

    def ignore(signum: int, frame: FrameType | None) -> None:
        return None

    previous = {sig: signal.signal(sig, ignore) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
