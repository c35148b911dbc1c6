"""The connections of :class:`app.remote.store.RemoteStore`, and the one way it changes rows.

Every change goes through :meth:`Database.write` (or :meth:`Database.change`, which also
locks the session's row and bumps its ``updated_at``): it checks that this replica (or this
maintenance command) still holds the database before the transaction and again at its commit
point, so a process that lost its hold commits nothing. A replica's write also holds the
database's lock shared until it commits, so that no maintenance command can begin between
that check and the commit. Audit rows go into the transaction of the change they record.

A connection that breaks while its ``COMMIT`` is on the way leaves the outcome unknown to the
client: the server may have committed. :meth:`Database.write` then asks the database
(``pg_xact_status`` of the transaction's id, the tool PostgreSQL provides for exactly this),
and answers as it was decided, or says that the outcome is unknown
(:class:`~app.remote.errors.CommitUnknownError`); it never reports a failure for a change
that was saved, which would make a client retry a create, or an upload delete the object a
committed row names.

Connections: a :class:`psycopg_pool.ConnectionPool` (psycopg's own pool), because the server
calls the store from many threads; the pool bounds the connections a replica opens and checks
each one before lending it, so a database restart costs one failed request at most, not a
broken connection per thread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import psycopg
from psycopg.rows import dict_row

from app import sandbox
from app.errors import SandboxViolationError, SessionNotFoundError
from app.remote import pg
from app.remote.errors import (
    CommitUnknownError,
    ConnectionLostError,
    DatabaseBusyError,
    DatabaseRefusedError,
    DatabaseTimeoutError,
    DatabaseUnavailableError,
    HolderLostError,
    StatementConnectionLostError,
    UnloggedWriteError,
)
from app.remote.rows import updated_sha256
from app.storage import TrashEntry

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

__all__ = [
    "NAMED_TIME_LENGTH",
    "NEWEST_DELETE",
    "TRASH_TIME_FORMAT",
    "Connection",
    "Database",
    "named_time",
    "now",
    "trash_entry",
    "trash_name",
    "utc",
]

TRASH_TIME_FORMAT: Final = "%Y%m%dT%H%M%S%fZ"
#: How long the time at the start of a trash entry's name is (``20261207T000000000000Z``).
NAMED_TIME_LENGTH: Final = 22
#: A file's newest trashed row's time, which each change of the file follows (`Database.
#: change`): ``session_id, name``. Through `pg.TRASHED_INDEX`: without it, the look of an
#: upload of a new name went through every trashed row of the database (red team 70 on
#: regress).
NEWEST_DELETE: Final = (
    "SELECT max(deleted_at) AS at FROM app_files WHERE session_id = %s"
    ' AND name = %s COLLATE "default" AND deleted_at IS NOT NULL'
)

Connection = psycopg.Connection[dict[str, Any]]


class _PoolDiscards(logging.Filter):
    """psycopg's pool warns of each connection it discards as broken or closed, naming it by
    its repr (``<...BoundedConnection [BAD] at 0x7f...>``): a command whose connection the
    server ended printed that line above its own refusal, which says what was lost and what
    to do (red team 52). Demoted to INFO: a log configured for it keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(("discarding broken connection", "discarding closed")):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_POOL_LOG: Final = logging.getLogger("psycopg.pool")
if not any(isinstance(each, _PoolDiscards) for each in _POOL_LOG.filters):
    _POOL_LOG.addFilter(_PoolDiscards())


def utc(column: str) -> str:
    """SQL for ``column`` as Python's ``isoformat(timespec="microseconds")`` of a UTC time.

    The local backend returns exactly that, whatever the connection's ``TimeZone``.
    """
    return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"


def now() -> datetime:
    """The current time, in UTC."""
    return datetime.now(UTC)


def just_after(moment: datetime) -> datetime:
    """A microsecond after ``moment`` (a row's time), or ``moment`` itself where that is past
    the last one Python holds (a row edited by hand: the change was an `OverflowError`)."""
    try:
        return moment.astimezone(UTC) + timedelta(microseconds=1)
    except OverflowError:
        return moment.astimezone(UTC)


def trash_name(moment: datetime, session_id: str, *, file: bool) -> str:
    """The name of a trash entry made at ``moment``."""
    # The local backend's names, so that `app sessions list --trash` reads the same; a file
    # entry has a random suffix (one file can be replaced many times in a microsecond).
    suffix = f"-file-{secrets.token_hex(4)}" if file else ""
    return f"{moment.strftime(TRASH_TIME_FORMAT)}-{session_id}{suffix}"


def named_time(name: str, fallback: datetime) -> datetime:
    """The time a trash entry's name gives, which its delete wrote in the same statement as
    ``deleted_at`` and answered, and which the local backend lists and empties the trash by;
    ``fallback`` (the row's ``deleted_at``) where the name has none (a tool's row). Read from
    the column, a ``deleted_at`` changed in the database (ten years back) was listed so, and
    `app data empty-trash --older-than 30d` deleted for good an entry made a second before,
    with `app data check` clean (red team 67 on regress)."""
    # By a pattern rather than `datetime.strptime` of `TRASH_TIME_FORMAT`: read for every
    # row of the trash's listing, strptime took 16.6 to 26.8 µs a name, this 4.0 to 5.7
    # (interleaved side by side, load 20 on 2 cores).
    found = _NAMED_TIME.match(name)
    if found is None:
        return fallback
    year, month, day, hour, minute, second, micro = map(int, found.groups())
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
    except ValueError:  # no such day (a month 13)
        return fallback


#: `TRASH_TIME_FORMAT` at the start of a name, each field's digits.
_NAMED_TIME: Final = re.compile(r"(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)(\d{6})Z", re.ASCII)


def trash_entry(
    name: str,
    kind: Literal["session", "file"],
    session_id: str,
    file: str | None,
    deleted_at: datetime,
    reason: str,
    title: str | None = None,
) -> TrashEntry:
    """A trash entry of this backend."""
    # `path` has no meaning here beyond naming the entry (the local backend: a directory).
    return TrashEntry(name, Path(name), kind, session_id, file, deleted_at, reason, title)


_FAILING_WAIT_SECONDS: Final = 1.0
"""How often a request waiting for a pooled connection looks whether one failed to open."""
#: What `Database._own_connection` returns where other requests' own connections take every
#: place the pool leaves: the request waits for their answer rather than being told a failure
#: of the pool's that may be stale.
_AWAITED: Final = object()

# Refusals that may come from a setting the connection took when it began (see `conn`).
_STALE_SETTINGS: Final = (psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.QueryCanceled)

#: The settings ``ALTER DATABASE ... SET`` and ``ALTER ROLE ... SET`` give the sessions of
#: this database and role, as one text: what a session takes once, when it begins, and keeps
#: (a reload of the server's configuration reaches the sessions that are open; these do not).
#: Read as each pooled connection opens, and again where one refuses a statement as
#: `_STALE_SETTINGS` do: changed since, its siblings took the settings that are gone too.
_SESSION_DEFAULTS: Final = (
    "SELECT coalesce(pg_catalog.string_agg(s.setdatabase::text || '/' || s.setrole::text"
    " || ':' || pg_catalog.array_to_string(s.setconfig, ','), ';'"
    " ORDER BY s.setdatabase, s.setrole), '') AS defaults"
    " FROM pg_catalog.pg_db_role_setting s WHERE s.setdatabase IN (0, (SELECT oid"
    " FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()))"
    " AND s.setrole IN (0, (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = session_user))"
)

#: Whether the session is read-only by a setting of the database or the role (``source``)
#: that they no longer give it: a session takes them as its server process starts, and
#: `_SESSION_DEFAULTS` is read after, in the pool's ``configure``, so a ``RESET`` committed
#: between the two is in the text the connection began with, not in the session (red team 72
#: on regress). The value that wins is the most specific: the role in this database, the
#: role, the database, then every role (``ALTER ROLE ALL``); read as PostgreSQL reads a
#: boolean.
_READ_ONLY_GONE: Final = (
    "SELECT s.setting = 'on' AND s.source IN ('database', 'user', 'database user', 'global')"
    " AND NOT coalesce((SELECT pg_catalog.split_part(c.kv, '=', 2)::boolean"
    " FROM pg_catalog.pg_db_role_setting d, pg_catalog.unnest(d.setconfig) AS c(kv)"
    " WHERE pg_catalog.split_part(c.kv, '=', 1) = 'default_transaction_read_only'"
    " AND d.setdatabase IN (0, (SELECT"
    " oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()))"
    " AND d.setrole IN (0, (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = session_user))"
    " ORDER BY d.setrole <> 0 DESC, d.setdatabase <> 0 DESC LIMIT 1), false) AS gone"
    " FROM pg_catalog.pg_settings s WHERE s.name = 'default_transaction_read_only'"
)

# With the server's start: a transaction id means something only to the server that gave it
# out (see `Database._settle`).
_BEGIN: Final = (
    "BEGIN; SELECT pg_current_xact_id()::text AS xid, pg_backend_pid() AS pid,"
    " pg_postmaster_start_time() AS started"
)
#: ``synchronous_commit`` for the transaction, whatever the session's value is now (red
#: team 64): the pool's connections set it as they open (`pg.configure_session`), but a
#: reload of the server's configuration (`ALTER SYSTEM SET synchronous_commit = off`, then
#: `pg_reload_conf()`) changes it under them where they found it `on` and set nothing, and a
#: server session a pooler hands on keeps what another client set. `local` is `on` for the
#: same reason as there (a synchronous standby would not have the commit). Set at the
#: commit point (`_still_held`), not with the BEGIN: a trigger of another's that says `SET
#: LOCAL synchronous_commit = off` (a logging tool's cheap write) set it again after the
#: BEGIN's, and the write committed with `off` (red team 65 on regress).
_DURABLE: Final = pg.DURABLE
# A replica's write holds the database's lock shared to its commit: maintenance, which asks
# for it exclusively, cannot begin between `_still_held` and the commit, when this replica's
# own lock may be gone. (Formatted from integer constants only.)
_BEGIN_HELD: Final = (
    f"{_BEGIN}, pg_try_advisory_xact_lock_shared({pg.HOLDERS_LOCK[0]}, {pg.HOLDERS_LOCK[1]})"
    " AS shared"
)


#: What `Database._began_with` keeps for a connection whose session took a read-only setting
#: the catalog no longer gives as it opened: it is never lent.
_BORN_STALE: Final = "\0born stale"


def _session_defaults(conn: Connection) -> str:
    """`_SESSION_DEFAULTS` read on ``conn``."""
    row = conn.execute(_SESSION_DEFAULTS).fetchone()
    return "" if row is None else str(row["defaults"])


def _reason(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


class Database:
    """A pool of connections to one database, held (or not) by this replica.

    Args:
        database_url: the database (already opened, hence stamped).
        profile: the profile, for audit rows.
        holder: this replica's live hold on the database, or ``None`` (maintenance).
        maintenance: a maintenance command's exclusive hold, which every change checks.
        kind: who writes, for audit rows.
        pool_size: the most connections this process opens.
        read_only: opened by a reader, which holds neither a replica's lock nor
            maintenance's: every change is refused.
        lock_wait_seconds: the longest one statement waits for a lock another connection
            holds (PostgreSQL's ``lock_timeout``, set on every connection of the pool);
            past it the statement is refused (:class:`DatabaseRefusedError`, 55P03).
        pool_wait_seconds: the longest a request waits for a free connection of the pool
            (:class:`~app.remote.errors.DatabaseBusyError` beyond).
        wait_seconds: the longest one wait for an answer of the database lasts, on every
            connection of the pool (:func:`app.remote.pg.bounded_connection`); past it the
            connection is closed (:class:`~app.remote.errors.DatabaseTimeoutError`, or
            :class:`~app.remote.errors.CommitUnknownError` for a commit).

    Raises:
        SandboxViolationError: under pytest, a database that is not the run's scratch one.
        DatabaseUnavailableError: the server cannot be reached.
    """

    def __init__(
        self,
        database_url: str,
        profile: str,
        *,
        holder: pg.Holder | None,
        kind: str,
        pool_size: int,
        read_only: bool = False,
        maintenance: pg.Maintenance | None = None,
        lock_wait_seconds: float = 10.0,
        pool_wait_seconds: float = 30.0,
        wait_seconds: float = 30.0,
    ) -> None:
        from psycopg_pool import ConnectionPool, PoolTimeout

        # The pool opens its connections itself, past pg.connect: refused here instead.
        sandbox.check_scratch("database_url", database_url, f"connecting (app {kind}) to")
        self.database_url = database_url
        self.where = pg.mask_url(database_url)
        self.profile = profile
        self.holder = holder
        self.maintenance = maintenance
        self.kind = kind
        self.read_only = read_only
        self.pool_size = pool_size
        self.wait_seconds = wait_seconds
        self.lock_wait_seconds = lock_wait_seconds
        self._lent = 0  # connections lent to callers now
        #: Requests' own connections (`_own_connection`), from before their connect until
        #: closed; the pool's most is lowered by as many meanwhile (`_room`).
        self._own = 0
        #: The pool's failure a request's own connection has since got past, and the pool
        #: been told to try again for (`_pool_tries_now`): once for each.
        self._past: tuple[float, psycopg.Error] | None = None
        self._lending = threading.Lock()
        #: The sandbox's refusal of a database the pool reached, raised to its waiters.
        self._violation: SandboxViolationError | None = None
        #: Whether the stamp requires every session's row's key (`hashed`): read once.
        self._hashed: bool | None = None

        # lock_timeout and synchronous_commit, as on every connection of the app's own code.
        def configure(conn: Connection) -> None:
            self._configure(conn)
            self._record(None)

        self._lock_wait_seconds = lock_wait_seconds

        #: Why the pool's last connection could not be opened or set up, and when; None
        #: once one is (red team 38: a database renamed or dropped under a replica was "did
        #: not answer within 30 s ... stopped or frozen", after 30 s, for each request,
        #: while the server said at once that it does not exist).
        self._failure: tuple[float, psycopg.Error] | None = None

        self._schema: str | None = None
        #: What `_SESSION_DEFAULTS` read as each pooled connection opened, or `_BORN_STALE`.
        self._began_with: weakref.WeakKeyDictionary[Connection, str] = weakref.WeakKeyDictionary()
        #: When the database last refused a change as read-only, and why; None once a change
        #: commits (`GET /health` and `/ready` say so meanwhile).
        self.read_only_refusal: tuple[float, str] | None = None
        self._connection_class = pg.bounded_connection(wait_seconds, self._record)

        self._conninfo = pg.conninfo(database_url, purpose=f"app {kind}")
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "row_factory": dict_row},
            # A hung server (SIGSTOP, a frozen host) kept requests waiting for ever: the
            # kernel acknowledges, so no TCP timeout fires (red team 28).
            connection_class=self._connection_class,
            configure=configure,
            check=ConnectionPool.check_connection,
            name=f"app-{kind}",
            open=False,
            timeout=pool_wait_seconds,
        )
        try:
            self._open_pool()
            # Its connections reach one database, with the conninfo's client_encoding: one
            # looked at is all of them (pg.check_encoding sends no query).
            with self._pool.connection() as conn:
                pg.check_encoding(conn, self.where)
                # The schema the stamp is in now, for every connection the pool opens later,
                # after a search_path set for the database or the role meanwhile.
                with pg.refusals(self.where, "reading where the app's tables are"):
                    self._schema = pg.app_schema(conn)
                    if self._schema is not None:
                        pg.pin_schema(conn, self._schema)
        except PoolTimeout as error:
            self._pool.close()
            if self._violation is not None:
                raise self._violation from None
            raise DatabaseUnavailableError(
                self.where,
                _reason(self._failing() or error),
                environment=pg.libpq_environment(self.database_url),
            ) from None
        except BaseException:
            self._pool.close()
            raise

    def _open_pool(self) -> None:
        """Open the pool and wait, up to 10 s, for its first connection.

        A connection limit of the role's or the database's reached (a replica's holder took
        the last one) refuses the pool's first connection at once: said so then, naming the
        limit, not after 10 s as "pool initialization incomplete ... Check that the server
        runs" (red team 73 on the remote backend). Any other failure is retried for the 10 s,
        as before."""
        opening = time.monotonic()
        #: Set once the pool's first connection is opened or refused (`_record`).
        self._first = threading.Event()
        self._pool.open(wait=False)
        self._first.wait(10)
        failed = self._failing()
        if failed is not None:
            limited = pg.refused_connection(
                self.where,
                failed,
                self.pool_size,
                f"a connection of its pool (app {self.kind})",
                database_url=self.database_url,
            )
            if limited is not None:
                raise limited
        self._pool.wait(timeout=max(0.0, 10 - (time.monotonic() - opening)))

    def _check_reached(self, conn: Connection) -> None:
        """Refuse, under a test run, a connection the pool opened to a database outside it,
        as :func:`pg.connect` refuses its own: libpq reads the ``PG*`` variables as it
        connects, after the check of the URL (red team 59)."""
        try:
            pg.check_reached(conn, f"connecting (app {self.kind}) to")
        except SandboxViolationError as violation:
            self._violation = violation
            raise

    def close(self) -> None:
        """Close the pool (not the holder)."""
        self._pool.close()

    @property
    def hashed(self) -> bool:
        """Whether the stamp says every session's row keeps its ``content_sha256``
        (`app.remote.pg.content_sha256_since`): read once, since only `app data check
        --repair`, under maintenance's exclusive hold, marks a database (and says so here)."""
        if self._hashed is None:
            with self.conn("the read of the stamp's content_sha256_since") as conn:
                self._hashed = pg.content_sha256_since(conn)
        return self._hashed

    def marked_hashed(self) -> None:
        """What `app data check --repair` says once it has marked the stamp."""
        self._hashed = True

    @contextlib.contextmanager
    def conn(self, what: str = "a read", outcome: str | None = None) -> Iterator[Connection]:
        """A connection from the pool, in autocommit mode.

        ``what`` names its statements, and ``outcome`` what they had done (by default,
        nothing: a read), where the connection ends under them.
        """
        from psycopg_pool import PoolTimeout

        lent = False
        try:
            with pg.refusals(self.where), self._pooled() as conn:
                lent = True
                with self._lending:
                    self._lent += 1
                try:
                    yield conn
                except _STALE_SETTINGS as error:
                    # A session keeps the default_transaction_read_only and statement_timeout
                    # it began with: once the operator reset them, as the refusal says to,
                    # the pool's connections opened meanwhile refused every change for their
                    # whole life (an hour; red team 38). Closed, it is discarded; its
                    # successor takes the settings as they are now. So are its siblings, idle
                    # or lent (psycopg_pool's drain, made for re-configuration): closing only
                    # this one let each sibling refuse one change more after the reset, and
                    # the last refused said "writes stopped" for ten seconds while the database
                    # took changes (a flaky CI run of red team 38's test).
                    if isinstance(error, psycopg.errors.ReadOnlySqlTransaction):
                        self.read_only_refusal = (time.monotonic(), _reason(error))
                    # Only where the database's or the role's settings changed since this
                    # one opened (red team 72 on integrity): a statement past a
                    # statement_timeout that was always there (a slow database, a DBA's
                    # pg_cancel_backend) renewed every connection of the pool, each refusal,
                    # and a database that stays read-only (a standby, a freeze) did the same
                    # at each refused change: read throughput halved, three connections
                    # opened per refusal, on a database already slow.
                    stale = self._settings_changed(conn)
                    conn.close()
                    if stale:
                        self._pool.drain()
                    raise
                finally:
                    with self._lending:
                        self._lent -= 1
        except PoolTimeout as error:
            if self._violation is not None:
                raise self._violation from None
            failed = self._failing()
            if failed is not None and self._lent < self.pool_size:
                refused = pg.refused_connection(
                    self.where,
                    failed,
                    self.pool_size,
                    f"a connection of its pool (app {self.kind})",
                    database_url=self.database_url,
                ) or pg.refusal(self.where, failed, "the settings of a new connection")
                raise refused or DatabaseUnavailableError(
                    self.where,
                    _reason(failed),
                    environment=pg.libpq_environment(self.database_url),
                ) from None
            if self._lent < self.pool_size:
                # Not every connection is lent, and none came: the pool could not open one,
                # or check one it had (its check timed out), in time. The server does not
                # answer; it is not this process's requests that hold the pool.
                raise DatabaseTimeoutError(
                    self.where,
                    f"no connection of the pool could be opened or checked: {_reason(error)}",
                    self._pool.timeout,
                    "the request",
                ) from None
            # The server may answer well: this process's own requests hold every connection.
            raise DatabaseBusyError(
                self.where, _reason(error), self._pool.timeout, self.pool_size
            ) from None
        except pg.WaitTimeoutError as error:
            raise DatabaseTimeoutError(self.where, _reason(error), error.seconds) from None
        except psycopg.OperationalError as error:
            if lent:
                # Reached, then ended under a statement: not "cannot connect ... check that
                # database_url names it", of settings that reached it (red team 52).
                raise StatementConnectionLostError(
                    self.where,
                    _reason(error),
                    what,
                    **({} if outcome is None else {"outcome": outcome}),
                ) from None
            raise DatabaseUnavailableError(
                self.where, _reason(error), environment=pg.libpq_environment(self.database_url)
            ) from None

    def _keep_session_defaults(self, conn: Connection) -> None:
        """Keep what `_SESSION_DEFAULTS` reads on ``conn``, opening. Not a refusal of the
        connection where it cannot be read: its refusals then renew the pool, as all did
        before this was kept."""
        with contextlib.suppress(psycopg.Error):
            began = _session_defaults(conn)
            # Its server process took a read-only setting reset since, as it started: the
            # RESET committed between the two. A drain at another's refusal misses it
            # (psycopg_pool adds a connection that was opening then as new), and it refused
            # one change more after the reset (a flaky run of red team 38's test, session
            # 72). Never lent (`_pooled`).
            # Asked only of a session that may be read-only: `_READ_ONLY_GONE` reads
            # pg_settings, which the server builds whole (some 350 rows) for each look, and
            # cost every connection opened about a fifth more server time, though a session
            # that is not read-only cannot be stale so (red team 72 on regress, round e).
            # PostgreSQL 14 and later report the session's value as it starts and at each
            # change (ParameterStatus): ``off`` is the session's own word; an older server
            # or a pooler that does not pass it on says nothing, and is asked. Nor of a
            # reader's: it changes nothing, so a read-only session serves it as well, and
            # closing it cost a connection opened for nothing.
            said = conn.info.parameter_status("default_transaction_read_only")
            if not self.read_only and said != "off":
                row = conn.execute(_READ_ONLY_GONE).fetchone()
                if row is not None and row["gone"]:
                    began = _BORN_STALE
            self._began_with[conn] = began

    def _settings_changed(self, conn: Connection) -> bool:
        """Whether the database's or the role's settings (`_SESSION_DEFAULTS`) are not those
        ``conn`` began with, read on it, or its session is read-only by one of them that they
        no longer give (`_READ_ONLY_GONE`: a change committed as it opened is in the text it
        began with, not in its session); True where that cannot be told (the look fails, or
        ``conn`` opened before this was kept), as then the pool is renewed as before."""
        began = self._began_with.get(conn)
        if began is None:
            return True
        try:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()
            # Its own statement_timeout may be the stale one: this look is not bound by it.
            conn.execute("SET statement_timeout = 0")
            if _session_defaults(conn) != began:
                return True
            row = conn.execute(_READ_ONLY_GONE).fetchone()
            return row is not None and bool(row["gone"])
        except psycopg.Error:
            return True

    @contextlib.contextmanager
    def _pooled(self) -> Iterator[Connection]:
        """``self._pool.connection()``, whose wait ends as soon as the pool fails to open a
        connection: the server said why (it is down, the database is gone, it refused the
        settings), and the pool keeps trying meanwhile. Looked at every second while some
        connection is not lent (one wait otherwise, keeping the pool's order of waiters)."""
        from psycopg_pool import PoolTimeout

        deadline = time.monotonic() + self._pool.timeout
        while True:
            left = max(deadline - time.monotonic(), 0.0)
            step = left if self._lent >= self.pool_size else min(left, _FAILING_WAIT_SECONDS)
            try:
                conn = self._pool.getconn(timeout=step)
            except PoolTimeout:
                if self._violation is not None:
                    raise
                own = self._own_connection()
                if isinstance(own, psycopg.Connection):
                    try:
                        with own:
                            yield own
                    finally:
                        self._own_closed(opened=True)
                    return
                if own is _AWAITED:
                    # Other requests ask the server now, in every place the pool's size
                    # leaves: their answer comes within a connect (the pool opens one at
                    # their first success), not the pool's failure, which may be stale.
                    if time.monotonic() >= deadline:
                        raise
                    continue
                if self._failing() is not None or time.monotonic() >= deadline:
                    raise
                continue
            if self._began_with.get(conn) is not _BORN_STALE:
                break
            conn.close()  # given back closed, it is replaced by one that takes the settings now
            self._pool.putconn(conn)
        try:
            with conn:
                yield conn
        finally:
            self._pool.putconn(conn)

    def _configure(self, conn: Connection) -> None:
        """Set up a new connection as every one of the pool's is."""
        self._check_reached(conn)
        try:
            pg.configure_session(conn, self._lock_wait_seconds)
            if self._schema is not None:
                pg.pin_schema(conn, self._schema)
            self._keep_session_defaults(conn)
        except psycopg.Error as error:
            # The server answered and refused the settings (a statement_timeout of 1 ms
            # for the database): a request waited 30 s, then "did not answer" (red team
            # 38). Said as the refusal it is.
            self._record(error)
            raise

    def _own_connection(self) -> Connection | object | None:
        """A connection of the request's own, opened and set up as the pool's are, when the
        pool's last attempt failed (`_asked_again`): ``None`` where this one fails too
        (recorded, to be said as it is now), or the pool's failure was a server's silence,
        or no place is left for it (`_room`: `_AWAITED` where other requests' take them).

        The pool retries a failed connection with a backoff that doubles (psycopg_pool's, up
        to its reconnect_timeout): after the refusal's remedy was run (`ALTER ROLE ...
        LOGIN`, a password set again) or the server was started again, a replica answered
        each request with the failure recorded before, "may not log in ... then retry", for
        as long as the pool's next attempt was due (10 s after 20 s of refusals, a minute
        or more after longer; red team 75 on the remote backend). Closed after the request:
        the pool's own attempts fill the pool as before."""
        # The failure as recorded, however old: the pool's attempts back off to two minutes
        # apart, and `_failing`'s minute was over between two of them, when a request waited
        # the pool's whole wait (30 s) and was told "no connection of the pool could be
        # opened" by a server that took connections again (red team 75 on regress, round c).
        failure = self._failure
        if failure is None or not self._asked_again(failure[1]):
            return None
        room = self._room()
        if room is not True:
            return room
        try:
            conn = self._connection_class.connect(
                self._conninfo, autocommit=True, row_factory=dict_row
            )
        except psycopg.OperationalError:
            self._own_closed()
            return None  # recorded by the connection class: said by `conn`
        except BaseException:
            self._own_closed()
            raise
        try:
            self._configure(conn)
            self._pool_tries_now(failure)  # in here: the connection is closed should it raise
        except psycopg.Error:
            conn.close()
            self._own_closed()
            return None  # recorded by `_configure`: said by `conn`
        except BaseException:
            conn.close()
            self._own_closed()
            raise
        return conn

    def _room(self) -> bool | object:
        """Take a place for a request's own connection within ``database_pool_size``, the
        pool's and the requests' own together: True, or `_AWAITED` where other requests'
        own connections take every place the pool leaves, or None where the pool's own
        connections and attempts take them all.

        The bound counted the own connections only while their connect ran and once lent,
        and not the pool's: a burst of requests, the pool failing, opened the pool's size of
        their own, and the pool one more at their first success (`_pool_tries_now`), so a
        role's CONNECTION LIMIT set to what a replica takes was refused (red team 75 on
        regress, round c, left open; red team 76 on the server). The pool's most is lowered by
        the own connections alive (psycopg_pool's public `resize`, under its lock: it grows
        no further), and what it counts (`pool_size`: its connections, lent or idle, and its
        attempts, in flight or waiting their backoff) is read after that, so that a growth
        before the resize is seen."""
        with self._lending:
            if self._own + 1 >= self.pool_size:
                return _AWAITED if self._own else None
            self._own += 1
            self._pool.resize(1, self.pool_size - self._own)
            if self._pool.get_stats()["pool_size"] + self._own > self.pool_size:
                self._own -= 1
                self._pool.resize(1, self.pool_size - self._own)
                return _AWAITED if self._own else None
            return True

    def _own_closed(self, opened: bool = False) -> None:
        """Give back the place of a request's own connection (`_room`), now closed; and, one
        that was ``opened`` and set up, have the pool try now if it has not yet
        (`_pool_tries_now`)."""
        with self._lending:
            self._own -= 1
            self._pool.resize(1, self.pool_size - self._own)
        failure = self._failure
        if opened and failure is not None:
            self._pool_tries_now(failure)

    def _pool_tries_now(self, failure: tuple[float, psycopg.Error]) -> None:
        """Have the pool open a connection now, not at its next attempt, once a request's own
        connection was opened past ``failure``: the server takes connections again.

        The pool's attempts back off (psycopg_pool's, doubling up to two minutes apart) and
        know nothing of a remedy run meanwhile: each request after `ALTER ROLE ... LOGIN`
        waited a second for the pool, then opened a connection of its own, 1.05 s for a
        create where it took milliseconds, for as long as the pool's next attempt was due
        (red team 75 on regress, round c). A growth of the pool (`resize`, its public
        call, which opens a connection at once) is asked for, then its least size set back:
        the connection stays, as any the pool grew to. Not where each of the pool's places
        has an attempt of its own waiting (``pool_size`` at its most), or its least size is
        its most: those wait for their attempts, as before."""
        with self._lending:
            if self._past is failure or self._failure is not failure:
                return  # asked already, by another request, or the pool opened one since
            # Its most lowered by one first: a growth of its own meanwhile stops short of it,
            # so that the one asked for here stays within it (`_room`). Where the requests'
            # own connections take the places its attempts leave, asked again as each closes
            # (`_own_closed`): a burst's first success found none (red team 76 on the server).
            most = self.pool_size - self._own
            if most < 2:
                return
            self._pool.resize(1, most - 1)
            if self._pool.get_stats()["pool_size"] < most:
                self._past = failure
                self._pool.resize(2, most)
            self._pool.resize(1, most)

    @staticmethod
    def _asked_again(error: psycopg.Error) -> bool:
        """Whether a request asks the server itself after the pool's last connection failed
        so: any failure it answers at once (a refusal, a role's login, the server down: its
        cause may have been ended since), not one of a server that does not answer (asked
        again, each request would wait for it as long again)."""
        return not isinstance(error, pg.WaitTimeoutError) and "timeout expired" not in str(error)

    def _record(self, error: psycopg.Error | None) -> None:
        self._failure = None if error is None else (time.monotonic(), error)
        self._first.set()

    def _failing(self) -> psycopg.Error | None:
        """Why the last connection could not be opened, if that was within the pool's own
        wait or a minute (its reconnect attempts back off) and none was opened since."""
        failure = self._failure
        if failure is None or time.monotonic() - failure[0] > max(60.0, self._pool.timeout):
            return None
        return failure[1]

    def ensure_held(self) -> None:
        """Raise :class:`HolderLostError` if this replica's hold on the database is gone.

        Raises:
            RuntimeError: the store was opened read-only, like a local data root's.
        """
        if self.read_only:
            # A reader takes no lock: a change through it would race live replicas and
            # maintenance alike, unseen by both.
            msg = (
                f"cannot change database {self.where}: it was opened read-only "
                "(open_storage(..., writer=False)); open it with writer=True, which takes "
                "its lock"
            )
            raise RuntimeError(msg)
        if self.holder is not None:
            self.holder.check()
        if self.maintenance is not None:
            self.maintenance.check()

    @contextlib.contextmanager
    def write(
        self,
        what: str = "a change",
        *,
        lock: tuple[int, int] | None = None,
        settled: Callable[[Connection], object] | None = None,
    ) -> Iterator[Connection]:
        """A transaction for a change, after checking that this process still holds.

        ``what`` names the change if the connection breaks while it commits. ``lock``: an
        advisory lock taken shared, to the commit, before the first statement of the change.
        ``settled``: run at the commit point, once every trigger deferred to the commit has
        fired there (a check that only reads; what it raises rolls the change back).
        """
        self.ensure_held()
        begun: dict[str, Any] = {}
        lent = committing = False
        try:
            with self.conn() as conn:
                lent = True
                try:
                    begun = self._begin(conn, lock)
                    yield conn
                    self._still_held(conn, what)
                    if settled is not None:
                        # Only reads: nothing of another's runs between the setting of
                        # `_still_held` and the COMMIT, and deferred triggers fire there, at
                        # the commit point, as every write's do (a test's observer of the
                        # commit's setting among them).
                        settled(conn)
                except BaseException:
                    with contextlib.suppress(psycopg.Error):
                        conn.rollback()
                    raise
                committing = True
                conn.commit()
                self.read_only_refusal = None
        except DatabaseRefusedError as error:
            # An answer, even to the COMMIT: the transaction was rolled back.
            raise DatabaseRefusedError(
                error.where, error.reason, error.sqlstate, error.remedy, what
            ) from None
        except DatabaseBusyError as error:
            raise DatabaseBusyError(
                error.where, error.reason, error.seconds, error.size, what
            ) from None
        except DatabaseTimeoutError as error:
            if committing:
                # The COMMIT was sent and its answer never came: the server may have saved
                # it, or may yet (it reads the COMMIT before the close when it resumes).
                self._settle(begun, what, error)
                return
            # Closed before the COMMIT was sent: the server rolls it back.
            raise DatabaseTimeoutError(error.where, error.reason, error.seconds, what) from None
        except DatabaseUnavailableError as error:
            if not committing:
                if not lent:
                    raise  # no connection: the server does not answer
                # It broke inside the transaction, or at its BEGIN (its backend ended by an
                # operator, a restart, a failover, after the pool checked it), before the
                # COMMIT was sent: rolled back for sure. Named, as a refusal must name what
                # it refused (red team 27: a break at BEGIN was a bare "cannot connect").
                raise ConnectionLostError(self.where, error.reason, what) from None
            self._settle(begun, what, error)

    def _begin(self, conn: Connection, lock: tuple[int, int] | None) -> dict[str, Any]:
        # The transaction's id now, so that a commit whose answer is lost can be looked up.
        # Sent with its BEGIN as one message (the simple protocol, hence no parameters): a
        # write then makes no more round trips than before it kept its id.
        query = _BEGIN if self.holder is None else _BEGIN_HELD
        if lock is not None:
            query += f", pg_advisory_xact_lock_shared({lock[0]:d}, {lock[1]:d}) AS locked"
        cursor = conn.execute(query.encode())
        cursor.nextset()  # past BEGIN's result
        row = cursor.fetchone()
        assert row is not None
        if self.holder is not None and not row["shared"]:
            raise HolderLostError(
                self.where,
                "a maintenance command holds the database exclusively, "
                + "; ".join(pg.lock_holders(conn)),
            )
        return row

    def _settle(self, begun: dict[str, Any], what: str, error: DatabaseUnavailableError) -> None:
        """Return if the transaction that lost its connection while committing was saved;
        raise what a caller must know if it was not, or if nobody can say."""
        try:
            with pg.connect(
                self.database_url,
                purpose=f"app {self.kind}: outcome of a commit",
                autocommit=True,
                # libpq's least; bounded both ways, as the pool's connections are.
                connect_timeout=max(2, math.ceil(self.wait_seconds)),
                bounds=pg.Bounds(self.wait_seconds, self.lock_wait_seconds),
            ) as conn:
                started = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
                if started is None or started[0] != begun["started"]:
                    # Another server behind the same address (a failover to a promoted
                    # standby, a restore), or this one restarted: a transaction id it knows
                    # may be another transaction's, since a server hands out again the ids
                    # whose records it never had. A failover's new primary called a replace
                    # that the old one never committed "committed" (red team 41).
                    raise CommitUnknownError(
                        self.where,
                        f"{error.reason}; then: the server that answers now is not the server "
                        "the change was sent to (it started at "
                        f"{'?' if started is None else started[0]}, that one at "
                        f"{begun['started']}: a failover, a restore or a restart behind the "
                        "same address), and its record of transactions says nothing of this "
                        "one. Where the change was sent, it may have been saved",
                        what,
                    )
                status = self._xact_status(conn, begun, self.wait_seconds)
        except CommitUnknownError:
            raise
        except (DatabaseUnavailableError, psycopg.Error) as again:
            raise CommitUnknownError(
                self.where, f"{error.reason}; then: {_reason(again)}", what
            ) from None
        if status == "committed":
            return
        if status == "aborted":
            raise ConnectionLostError(
                self.where,
                f"{error.reason}; it broke as the change committed, and the database says "
                "it was not saved",
                what,
            ) from None
        raise CommitUnknownError(self.where, f"{error.reason}; then: status {status}", what)

    @staticmethod
    def _xact_status(
        conn: psycopg.Connection[Any], begun: dict[str, Any], wait_seconds: float
    ) -> str | None:
        query = "SELECT pg_xact_status(%s::xid8) AS status"
        row = conn.execute(query, (begun["xid"],)).fetchone()
        if row is None or row[0] != "in progress":
            return None if row is None else row[0]
        # Its backend still runs (a half-open connection: the COMMIT may yet arrive). Ended
        # here, the transaction's outcome is final; the xid names the backend, not a pid
        # that may have been reused. A stopped backend does not end (SIGTERM waits for its
        # SIGCONT): waited for half this connection's bound, then the outcome is unknown.
        conn.execute(
            "SELECT pg_terminate_backend(pid, %s) FROM pg_stat_activity WHERE pid = %s"
            " AND backend_xid = (%s::xid8::text::numeric %% 4294967296)::text::xid",
            (min(10_000, max(1, round(wait_seconds * 500))), begun["pid"], begun["xid"]),
        )
        row = conn.execute(query, (begun["xid"],)).fetchone()
        return None if row is None else row[0]

    @contextlib.contextmanager
    def change(
        self,
        session_id: str,
        what: str = "a change",
        *,
        file: str | None = None,
        then: Callable[[Connection], object] | None = None,
        settled: Callable[[Connection], object] | None = None,
    ) -> Iterator[tuple[Connection, datetime]]:
        """:meth:`write` a change to a live session's files, then bump its ``updated_at``.

        The session's row is locked first: replicas serialise on it, and a session deleted
        meanwhile is refused here (:class:`~app.errors.SessionNotFoundError`). Yields the
        connection and the change's moment, taken once the lock is held, and for a change
        of ``file``, later than every trashed version of it. ``then``: run on the
        connection last, before the commit, with the new ``updated_at`` written and every
        trigger deferred to the commit fired (what a change answers with is read there: read
        after the commit, a read that failed answered a change that was made as one that
        changed nothing). ``settled``: as :meth:`write`'s.
        """
        with self.write(what, settled=settled) as conn:
            row = conn.execute(
                "SELECT id, updated_at FROM app_sessions WHERE id = %s AND deleted_at IS NULL"
                " FOR NO KEY UPDATE",
                (session_id,),
            ).fetchone()
            if row is None:
                raise SessionNotFoundError(session_id)
            # Under the lock: a moment taken before it (as it was) dated a delete that waited
            # there behind a replace of the same file before that replace, so the version
            # the delete trashed sorted older than the one the replace trashed, and a
            # restore brought back the older one (red team 33, the randomized history). Two
            # replicas' clocks may differ too; the newest trashed version bounds it.
            moment = now()
            # After the session's last change too (its updated_at is that change's moment):
            # with a replica's clock behind another's, or stepped back, a delete was dated
            # before the upload it deleted, a name put again before the version deleted, a
            # new file before older ones, and the session's updated_at went back; a client
            # that fetches what changed since the newest time it saw never saw them (red
            # team 56, second round; the local store alike, `app.store.records.change_floor`).
            if row["updated_at"] is not None:
                moment = max(moment, just_after(row["updated_at"]))
            if file is not None:
                newest = conn.execute(NEWEST_DELETE, (session_id, file)).fetchone()
                if newest is not None and newest["at"] is not None:
                    moment = max(moment, just_after(newest["at"]))
            yield conn, moment
            # Its key with it (rows67: a time changed in the database was served).
            updated = updated_sha256(session_id, moment.isoformat(timespec="microseconds"))
            conn.execute(
                "UPDATE app_sessions SET updated_at = %s, updated_sha256 = %s WHERE id = %s",
                (moment, updated, session_id),
            )
            if then is not None:
                # Every trigger deferred to the commit first (`pg.FIRE_DEFERRED`): read
                # before them, a restore that one of another's undid at the commit (a row
                # put back in the trash) was answered as made (red team 68 on regress).
                conn.execute(pg.FIRE_DEFERRED.encode())
                then(conn)

    def _still_held(self, conn: psycopg.Connection[Any], what: str) -> None:
        # Again at the commit point, and in the database rather than in this process: the
        # holder's watch notices a lost connection within a ping, and a change must not
        # commit in that window, when maintenance may already hold the database.
        if self.maintenance is not None:
            self.maintenance.still_held(conn)
        held = self.holder is not None and bool(self.holder.row)
        # After every statement of the change, and every trigger they fired (`_DURABLE`).
        query = f"SELECT {_DURABLE}, EXISTS (SELECT 1 {pg.UNLOGGED_FROM}) AS unlogged"
        params: dict[str, Any] = {"tables": list(pg.APP_TABLES)}
        if held:
            assert self.holder is not None
            query += (
                ", EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND objsubid = 2 AND pid = %(pid)s AND classid = %(lock_class)s"
                " AND objid = %(row)s) AS held"
            )
            params.update(
                pid=self.holder.row["backend_pid"],
                row=self.holder.row["id"],
                lock_class=pg.ROW_LOCK_CLASS,
            )
        # Every trigger deferred to the commit fires first (`pg.FIRE_DEFERRED`): one that
        # says `SET LOCAL synchronous_commit = off` ran at the COMMIT, after the setting,
        # and a session's delete committed with `off` (session 66). Sent with the query in
        # one pipeline: no round trip more, and the query stays a prepared one.
        with conn.pipeline():
            conn.execute(pg.FIRE_DEFERRED.encode())
            cursor = conn.execute(query, params)
        row = cursor.fetchone()
        assert row is not None
        if held and not row["held"]:
            assert self.holder is not None
            raise HolderLostError(
                self.where, f"backend {self.holder.row['backend_pid']} no longer holds its lock"
            )
        if row["unlogged"]:
            # A table of the app's made UNLOGGED under this process, which the open refuses
            # (red team 62): read at the commit point, after the change's statements took
            # their locks on what they wrote, so an `ALTER ... SET UNLOGGED` of those
            # committed before is seen and one after waits for this commit. A replica
            # acknowledged every write until its next start, each lost by a crash (red team
            # 64, red team 62's not stopped).
            tables, sequences = pg.unlogged(conn)
            raise UnloggedWriteError(self.where, what, tables, sequences)

    def audit(
        self, conn: psycopg.Connection[Any], operation: str, target: str, **details: Any
    ) -> None:
        """Append one row to ``app_audit`` in the transaction of ``conn``."""
        pg.audit(conn, self.profile, self.kind, operation, target, details)

    def audit_alone(self, operation: str, target: str, **details: Any) -> None:
        """Append one row to ``app_audit`` in its own transaction."""
        with self.write(f"the audit record of {operation}") as conn:
            self.audit(conn, operation, target, **details)
