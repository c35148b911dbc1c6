"""Start a real ``app serve`` for a test, on a port the server binds itself.

The server publishes where it listens as its storage's holder does: on a data root, the port
in the holder JSON of the root's lock file (:func:`published_port`); on PostgreSQL and object
storage, the URL in its replica row (:func:`published_url`). Either way it binds port 0
itself first, so that no other process can take the port between its choice and its use.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Protocol

import pytest

if TYPE_CHECKING:
    from app.config import Config

# Each poll is a read of the lock file or a refused connection: cheap. A server starts in
# about 0.45 s, which polls 50 ms apart lengthened by 25 ms at each of its two waits. The
# attempts below keep the bounds they had (30 s, 60 s, 30 s and 15 s).
_POLL_SECONDS = 0.01


class ServerProcess(Protocol):
    """What the helpers here use of a server's process: a `subprocess.Popen`, or a server
    forked from the run's warm interpreter (`app.testing.zygote.WarmServer`)."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


@dataclass(frozen=True)
class LiveServer:
    """A real ``app serve`` subprocess started by the `app_live_server` fixture.

    Attributes:
        url: where it serves, ``http://127.0.0.1:<port>``.
        data_root: its data root (a fresh one of its own), or ``None`` when the testing
            profile uses PostgreSQL and object storage: the server is then a replica on the
            run's scratch database and prefix, which ``config`` names.
        pid: the ``app serve`` process.
        token: the bearer token it requires, if any.
        log: the file its output goes to.
        config: the configuration it was started with (its profile and storage;
            ``open_storage(server.config, writer=False)`` reads what it wrote), with the
            host and port it listens on (not the settings' port, where another server may
            listen). Its repr shows no secret.
    """

    url: str
    data_root: Path | None
    pid: int
    token: str | None
    log: Path
    config: Config = field(repr=False)

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header the server expects, if it has a token."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def location(self) -> str:
        """Where its data lives, for messages: the data root, or the database and prefix
        (no password)."""
        return self.config.storage

    def __str__(self) -> str:
        return self.url


def _exited(process: ServerProcess, log: Path) -> None:
    if process.poll() is not None:
        out = log.read_text(errors="replace")
        pytest.fail(f"app serve exited with {process.returncode}:\n{out}", pytrace=False)


def published_port(root: Path, process: ServerProcess, log: Path, attempts: int = 3000) -> int:
    """The port an ``app serve --port 0`` bound, read from the holder JSON of its lock file.

    The server binds the socket itself and then publishes the port, so no other process can
    take the port between its choice and its use (a race under ``pytest -n 2``).

    Args:
        root: the server's data root.
        process: the ``app serve`` process.
        log: the file its output goes to, shown if it exits first.
        attempts: how many polls, 10 ms apart, before giving up.
    """
    from app.lock import read_holder

    for _ in range(attempts):
        holder = read_holder(root)
        if holder and holder.get("pid") == process.pid and holder.get("port"):
            return int(holder["port"])
        _exited(process, log)
        time.sleep(_POLL_SECONDS)
    process.kill()
    out = log.read_text(errors="replace")
    pytest.fail(f"app serve published no port in {root / '.server.lock'}:\n{out}", pytrace=False)


def published_url(
    database_url: str, process: ServerProcess, log: Path, attempts: int = 6000
) -> str:
    """The URL an ``app serve --port 0`` replica published in its holder row.

    A replica on PostgreSQL and object storage has no lock file: it publishes host, pid,
    profile, since and URL in the database's ``app_holders`` table, live while its
    connection holds its advisory locks. The row of this process is found by its host and
    pid (other replicas, and a test's own ``app_store``, may hold the database too).

    Args:
        database_url: the database the server opens (the run's scratch database).
        process: the ``app serve`` process.
        log: the file its output goes to, shown if it exits first or never publishes.
        attempts: how many polls, 10 ms apart, before giving up (more than for a data root:
            a replica also imports the database and S3 clients and checks both stamps).
    """
    import socket

    from app.remote import pg

    ours = (socket.gethostname(), process.pid)
    with pg.connect(database_url, purpose="app_live_server", autocommit=True) as conn:
        for _ in range(attempts):
            # The table appears when the server's first open creates the app's tables.
            if conn.execute("SELECT to_regclass('app_holders')").fetchone() != (None,):
                for row in pg.live_holders(conn):
                    url = str(row.get("url") or "")
                    if (row["host"], row["pid"]) == ours and url.startswith("http"):
                        return url
            _exited(process, log)
            time.sleep(_POLL_SECONDS)
    process.kill()
    out = log.read_text(errors="replace")
    pytest.fail(
        f"app serve published no URL in app_holders of database {pg.mask_url(database_url)}"
        f":\n{out}",
        pytrace=False,
    )


def _start(
    env: Mapping[str, str],
    log: Path,
    published: Callable[[ServerProcess], str],
    warm: object = None,
    remote: bool = False,
) -> tuple[ServerProcess, str]:
    process: ServerProcess
    with os.fdopen(_open_log(log), "wb") as output:
        zygote = None
        if warm is not None:
            from app.testing.zygote import forking

            zygote = forking(env, warm)
        if zygote is not None:
            process = zygote.serve(env, output.fileno(), remote)
        else:
            process = subprocess.Popen(
                [sys.executable, "-m", "app", "serve", "--port", "0"],
                env=dict(env),
                stdout=output,
                stderr=output,
            )
    return process, serving_at(process, log, published)


def _open_log(log: Path) -> int:
    """``log`` opened to write the server's output into, emptied: a file of one name only.

    ``open("wb")`` writes through a link: a hard link (or a symbolic link) planted at the
    log's name by a fixture that ran first, to a production session's ``session.json``,
    had that record emptied and filled with the server's output. Refused instead, before
    anything is written, as the app refuses such a lock file (``app.lock``).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(log, flags, 0o600)
    except OSError as error:
        if error.errno == errno.ENXIO:  # a FIFO nothing reads: the output would block
            _refuse_log(log, "is a FIFO")
        if error.errno != errno.ELOOP:
            raise
        _refuse_log(log, f"is a symbolic link (to {log.readlink()})")
    found = os.fstat(fd)
    if stat.S_ISREG(found.st_mode) and found.st_nlink == 1:
        os.ftruncate(fd, 0)
        return fd
    os.close(fd)
    what = "is not a regular file" if not stat.S_ISREG(found.st_mode) else (
        f"has {found.st_nlink} hard links (`find / -xdev -samefile {log}` lists the others)"
    )  # fmt: skip
    _refuse_log(log, what)


def _refuse_log(log: Path, what: str) -> NoReturn:
    __tracebackhide__ = True
    pytest.fail(
        f"app: refusing to write the live server's log {log}: it {what}, and the server's "
        "output would change the file it leads to, which may be in a data root. Remove it "
        f"(rm {log}) and let the fixture make the file",
        pytrace=False,
    )


def serving_at(
    process: ServerProcess,
    log: Path,
    published: Callable[[ServerProcess], str],
) -> str:
    """The URL ``published`` finds for a server just started, once it answers there; the
    server killed if it never does (or the wait is interrupted), so that none is left."""
    try:
        url = published(process)
        wait_until_serving(url, process, log=log)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return url


def start_server(
    env: Mapping[str, str], root: Path, log: Path, *, warm: object = None
) -> tuple[ServerProcess, str]:
    """Start ``app serve --port 0`` on a data root; return it and its URL once it answers.

    The caller stops it (:func:`stop_server`).

    Args:
        env: the server's whole environment (its profile, root and token come from it).
        root: the data root that environment gives it, where it publishes its port.
        log: where its output goes: a file, not a pipe, which nobody would read while the
            test runs, and which would block the server once full.
        warm: a run's pytest configuration: fork the server from that run's warm
            interpreter (`app.testing.zygote`), which imported the server's modules once,
            where `env` allows it (the `app_live_server` fixture's way); without it, or
            when `env` does not allow it, a plain ``python -m app`` process.
    """

    def port(process: ServerProcess) -> str:
        return f"http://127.0.0.1:{published_port(root, process, log)}"

    make_first_deploy_root(env, root)
    return _start(env, log, port, warm)


def make_first_deploy_root(env: Mapping[str, str], root: Path) -> None:
    """Make ``root`` empty (mode 0700) if ``env`` selects the production profile and it does
    not exist: a protected profile's server does not create its root (``app serve`` exits
    78, so that a mistyped path is not served empty), and a deployment makes it once, by
    hand, as this does for a test. (By the profile's name: under pytest this process may not
    load production's settings itself. Another profile made protected in the settings gets
    the server's refusal, which says what to make.)
    """
    from app.config import ALWAYS_PROTECTED

    selected = env.get("ENV_FOR_DYNACONF", "").strip().lower()
    if selected == ALWAYS_PROTECTED and not os.path.lexists(root):
        root.mkdir(mode=0o700, parents=True)


def start_replica(
    env: Mapping[str, str], database_url: str, log: Path, *, warm: object = None
) -> tuple[ServerProcess, str]:
    """Start ``app serve --port 0`` as a replica on PostgreSQL and object storage; return it
    and its URL (from its holder row) once it answers.

    The caller stops it (:func:`stop_server`, which also waits for its row to go).

    Args:
        env: the server's whole environment (its profile, database and prefix come from it;
            ``APP_HOST=127.0.0.1`` makes the URL it publishes one this machine can reach).
        database_url: the database that environment gives it, where it publishes its URL.
        log: where its output goes (a file, as for :func:`start_server`).
        warm: a run's pytest configuration: fork the replica from that run's warm
            interpreter where `env` allows it, as for :func:`start_server`.
    """

    def published(process: ServerProcess) -> str:
        return published_url(database_url, process, log)

    return _start(env, log, published, warm, remote=True)


def stop_server(
    process: ServerProcess, database_url: str | None = None, attempts: int = 3000
) -> None:
    """Stop a server started by :func:`start_server` or :func:`start_replica`: SIGTERM, so
    that it finishes in-flight requests and gives up its hold in order (a replica deletes its
    holder row); SIGKILL if it has not exited 30 s later.

    Args:
        process: the ``app serve`` process.
        database_url: a replica's database: once the process is gone, wait until no live
            row names its pid, and delete a row that a killed replica left (not live, but
            ``app status`` would count it until the next replica's start cleans it).
        attempts: polls, 10 ms apart, for PostgreSQL to see a killed replica's connection go.
    """
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if database_url is None:
        return
    from app.remote import pg

    with pg.connect(database_url, purpose="app_live_server", autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('app_holders')").fetchone() == (None,):
            return
        for _ in range(attempts):
            if not any(row["pid"] == process.pid for row in pg.live_holders(conn)):
                break
            time.sleep(_POLL_SECONDS)
        pg.clean_stale_holders(conn)


def wait_until_serving(
    url: str, process: ServerProcess, attempts: int = 1500, log: Path | None = None
) -> None:
    """Poll ``GET /health`` until it answers; fail with the server's output if it exits.

    Args:
        url: the server's base URL.
        process: the ``app serve`` process.
        attempts: how many polls, 10 ms apart, before giving up.
        log: the file the server writes its output to, shown if it exits (else its stdout
            pipe is read).
    """
    import httpx

    # One client for the whole wait, which loads no certificates for plain HTTP (a client per
    # poll loaded the system's CA bundle each time, about 35 ms of CPU).
    with httpx.Client(verify=not url.startswith("http://"), timeout=1.0) as client:
        for _ in range(attempts):
            if process.poll() is not None:
                if log is not None:
                    out = log.read_text(errors="replace")
                else:
                    stdout = getattr(process, "stdout", None)
                    out = stdout.read().decode(errors="replace") if stdout else ""
                pytest.fail(f"app serve exited with {process.returncode}:\n{out}", pytrace=False)
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(_POLL_SECONDS)
    process.kill()
    pytest.fail(f"app serve did not answer {url}/health", pytrace=False)
