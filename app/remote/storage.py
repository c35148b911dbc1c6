"""Opening a remote profile's storage: the PostgreSQL + object storage branch of the seam.

:func:`app.storage.open_storage` calls :func:`open_remote` when a profile sets
``database_url``; it returns a :class:`~app.remote.store.RemoteStore` that holds the database
the way the process's kind needs:

* **A server** (``kind="server"``, and a test run's ``"tests"``) is one replica among any
  number: it starts a :class:`~app.remote.pg.Holder` (a *shared* advisory lock on a
  connection of its own, and a row saying host, pid, profile, since and URL) for its whole
  life. Other replicas do not refuse it; maintenance does, and it refuses maintenance.
* **A maintenance command** (any other writer: purge, empty-trash, check --repair, restore,
  restamp) takes the same lock *exclusively* through :func:`~app.remote.pg.maintenance`, so it
  is refused (exit 75) while any replica lives, naming every one, and it keeps every replica
  from starting until it ends.
* **A reader** holds nothing: rows are the truth, and what one replica committed the next
  read sees.

Every open first checks the stamps (the database's ``app_stamp`` row and the prefix's stamp
object): another profile's storage is refused with the command that re-stamps it, and a
database or prefix with things of its own and no stamp is refused. An empty database and an
empty prefix are stamped by the first open, readers included: a read needs the app's tables,
and the stamp names the profile that opened it, as the first writer's would.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from app import sandbox
from app.errors import ConfigError
from app.remote import pg
from app.remote.errors import (
    DatabaseRefusedError,
    DatabaseStampMissingError,
    DatabaseTimeoutError,
    DatabaseUnavailableError,
    ObjectStoreCutShortError,
    ObjectStoreUnavailableError,
    PrefixEmptiedError,
    PrefixStampMissingError,
    RemoteStampMismatchError,
    ReplicasLiveError,
    RestampBoundElsewhereError,
    TablesOffSearchPathError,
    TablesShadowedError,
    describe_replica,
    needs_confirmation,
    paused_here,
)
from app.remote.objects import STAMP_NAME, another_database
from app.storage import Probe

if TYPE_CHECKING:
    from app.config import Config
    from app.errors import AppError
    from app.remote.objects import ObjectStore
    from app.remote.store import RemoteStore

__all__ = ["RemoteStatus", "describe", "diagnose", "open_remote", "restamp"]

_REPLICA_KINDS = frozenset({"server", "tests"})
_RETRY_SECONDS = 0.05


def _urls(config: Config) -> tuple[str, str]:
    # The configuration refuses a profile that sets one of the two without the other.
    assert config.database_url is not None and config.blob_url is not None
    return config.database_url, config.blob_url


def _objects(config: Config) -> ObjectStore:
    from app.remote.objects import ObjectStore

    return ObjectStore(
        _urls(config)[1],
        config.s3_endpoint_url,
        config.s3_access_key_id,
        config.s3_secret_access_key,
        connect_timeout=config.s3_connect_timeout_seconds,
        read_timeout=config.s3_read_timeout_seconds,
        max_attempts=config.s3_max_attempts,
        credential_process_seconds=config.s3_credential_process_seconds,
    )


def _bounds(config: Config) -> pg.Bounds:
    """How long this process's own connections wait on the database: the replicas' pooled
    ones and a command's alike, so that no command waits for ever on a database that is
    stopped, or behind a lock a stopped process holds."""
    return pg.Bounds(config.database_wait_seconds, config.database_lock_wait_seconds)


@contextlib.contextmanager
def _exclusive(
    database_url: str, profile: str, wanted: str, timeout: float, bounds: pg.Bounds
) -> Iterator[pg.Maintenance]:
    """:func:`pg.maintenance`, retried for ``timeout`` seconds while only another maintenance
    command holds the database (it ends soon); live replicas are refused at once."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.ExitStack() as stack:
            try:
                maintenance = stack.enter_context(
                    pg.maintenance(database_url, profile, wanted, bounds)
                )
            except ReplicasLiveError as error:
                if error.replicas or time.monotonic() >= deadline:
                    raise
                time.sleep(_RETRY_SECONDS)
                continue
            yield maintenance
            return


def _explained(
    refused: RemoteStampMismatchError, config: Config, key: str
) -> RemoteStampMismatchError:
    """`refused` with why `key` named another profile's storage, where the environment
    explains it (`app.config.set_for_another_profile`, red team 74)."""
    import dataclasses

    from app.config import set_for_another_profile

    came_from = set_for_another_profile(config, key, refused.stamped)
    return dataclasses.replace(refused, came_from=came_from) if came_from else refused


def open_remote(
    config: Config,
    *,
    writer: bool,
    kind: str = "maintenance",
    wanted: str | None = None,
    timeout: float = 1.0,
) -> RemoteStore:
    """Open a remote profile's storage as a replica, a maintenance command or a reader.

    Args:
        config: a profile that sets ``database_url`` and ``blob_url``.
        writer: change the data: a replica (``kind`` ``"server"`` or ``"tests"``) holds it
            shared; any other kind holds it exclusively (maintenance).
        kind: who opens it, for the holder row and the audit records.
        wanted: what the caller is doing, for the refusal message.
        timeout: seconds to retry while another maintenance command holds the database.

    Returns:
        The store; close it (or use ``with``) to end the hold.

    Raises:
        ReplicasLiveError: maintenance while replicas (or another maintenance) hold the
            database (exit 75); the message names every live replica.
        MaintenanceRunningError: a replica while maintenance holds it (exit 75).
        RemoteStampMismatchError: the database or the prefix belongs to another profile.
        UnstampedNotEmptyError: a database or prefix with things of its own and no stamp.
    """
    from app.remote.store import RemoteStore

    database_url, blob_url = _urls(config)
    sandbox.check_remote(database_url, blob_url, "open")
    sandbox.check_given_profile(config.profile, "the remote storage", "open")
    protection = config.taking_needs_confirmation
    objects = _objects(config)
    location = objects.location
    bounds = _bounds(config)
    # The database and the prefix are bound to each other on their first open: another
    # machine's settings naming one of them with another of the other are refused.
    try:
        stamp = pg.open_database(
            database_url,
            config.profile,
            protected=protection,
            objects=(location.bucket, location.prefix, objects.where),
            bounds=bounds,
        )
    except RemoteStampMismatchError as refused:
        raise _explained(refused, config, "database_url") from None
    assert stamp.database_id is not None
    try:
        objects.open(
            config.profile,
            protected=protection,
            database=(stamp.database_id, pg.mask_url(database_url), stamp.instance, stamp.timeline),
            named=stamp.named,
        )
    except ConfigError as refused:
        # Refused by the prefix for good (another profile's or database's, another
        # application's objects, ...): the prefix this open recorded is forgotten, else the
        # mended blob_url was refused as "not the prefix recorded" (red team 41). A store
        # that does not answer is not ConfigError: the next open will use the same prefix.
        if stamp.bound_now:
            pg.unbind(database_url, stamp.database_id, bounds)
        if isinstance(refused, RemoteStampMismatchError):
            raise _explained(refused, config, "blob_url") from None
        raise
    with contextlib.ExitStack() as held:
        holder: pg.Holder | None = None
        maintenance: pg.Maintenance | None = None
        if writer and kind in _REPLICA_KINDS:
            holder = held.enter_context(
                pg.Holder(
                    database_url,
                    config.profile,
                    lock_wait_seconds=config.database_lock_wait_seconds,
                )
            )
        elif writer:
            wanted = wanted or f"open the database as a {kind} process"
            maintenance = held.enter_context(
                _exclusive(database_url, config.profile, wanted, timeout, bounds)
            )
        # The store ends the hold when it closes: the holder itself, the exclusive lock
        # through on_close.
        release = held.pop_all()
    try:
        return RemoteStore(
            database_url,
            objects,
            config.profile,
            holder=holder,
            kind=kind,
            read_only=not writer,
            max_upload_bytes=config.max_upload_bytes,
            max_files_per_session=config.max_files_per_session,
            on_close=None if holder is not None else release.close,
            maintenance=maintenance,
            lock_wait_seconds=config.database_lock_wait_seconds,
            # One bound for every wait on the database: a free connection, then each answer.
            pool_wait_seconds=config.database_wait_seconds,
            wait_seconds=config.database_wait_seconds,
        )
    except BaseException:
        release.close()
        raise


def restamp(
    config: Config, from_profile: str, *, confirm: Callable[[str], None] | None = None
) -> Mapping[str, Any]:
    """Hand the database and the prefix stamped ``from_profile`` to ``config.profile``;
    the new stamp, with ``changed`` ``False`` when both were this profile's already.

    ``confirm`` is called with ``from_profile`` under the hold, once a stamp is found to be
    its, before anything is written, and raises to refuse: asked before the stamps were
    read, a mistyped ``--from prodution`` was told to confirm, and the command, re-run with
    the confirmation as told, was refused for the stamp it found, and a repeated command
    that changes nothing asked for a confirmation (red team 61 on regress), as the data
    root's did before red team 61.

    Under maintenance (refused while any replica lives), audited in ``app_audit``; the
    database first, then the prefix, so that a run interrupted between the two is finished
    by running the same command again.
    """
    database_url, blob_url = _urls(config)
    sandbox.check_remote(database_url, blob_url, "re-stamp")
    source = from_profile.lower()
    # Handed away from another profile than testing, under unittest or a pytest without
    # the app's plugin, as the local root's re-stamp refuses (red team 59).
    sandbox.check_given_profile(
        source,
        "the remote storage",
        "re-stamp",
        made=f"to hand it to profile {config.profile!r}",
    )
    protection = config.taking_needs_confirmation
    bounds = _bounds(config)
    objects = _objects(config)
    location = objects.location
    # As its open does, before the database changes: another profile's re-stamp wrote its
    # stamp over a test run's, inside that run's scratch prefix, no open before it (red
    # team 67 on regress, rt-regress67a).
    objects.refuse_inside_a_run(config.profile)
    with (
        pg.connect(database_url, purpose="app restamp", bounds=bounds) as conn,
        pg.refusals(pg.mask_url(database_url), "the read of its stamp"),
    ):
        found = pg.read_stamp(conn)
        database_id, bucket, prefix = pg.binding(conn) if found is not None else (None,) * 3
    if database_id is not None and (bucket, prefix) != (location.bucket, location.prefix):
        # A copy of another profile's database: re-stamped, the next refusal said to point
        # blob_url at the prefix it is bound to, another database's (red team 39).
        raise RestampBoundElsewhereError(
            config.profile, source, pg.mask_url(database_url), f"s3://{bucket}/{prefix}",
            objects.where,
        )  # fmt: skip
    stamped = found is not None
    if not stamped:
        # Nothing of the app's there yet: creating it stamps it for this profile at once
        # (or refuses a database with tables of its own).
        pg.open_database(database_url, config.profile, protected=protection, bounds=bounds)
    wanted = f"re-stamp {_describe_location(config)} from {source!r} to {config.profile!r}"
    # Its reads on the held connection (which rows name which objects) under the server's
    # refusals too: one waiting past lock_timeout behind a `VACUUM FULL app_files` was a
    # bare psycopg traceback, exit 1 (red team 49).
    with (
        _exclusive(database_url, config.profile, wanted, 1.0, bounds) as maintenance,
        pg.refusals(pg.mask_url(database_url), "the re-stamp of its object prefix"),
    ):
        before = objects.read_stamp()
        taken = (
            None
            if before is None or before.get("profile") == config.profile
            else another_database(
                config.profile,
                before,
                objects.where,
                (database_id, pg.mask_url(database_url), None, None),
            )
        )
        if taken is not None:
            raise taken
        if before is not None and before.get("profile") not in (source, config.profile):
            # Refused before the database changes, so that nothing is left half handed over.
            raise RemoteStampMismatchError(
                f"object prefix {objects.where}", f"its object {STAMP_NAME}",
                str(before.get("profile")), config.profile,
                protected=needs_confirmation(protection, source),
            )  # fmt: skip
        held = pg.read_stamp(maintenance.conn)
        if held is not None and held.profile not in (source, config.profile):
            raise RemoteStampMismatchError(
                f"database {pg.mask_url(database_url)}", "its table app_stamp", held.profile,
                config.profile, protected=needs_confirmation(protection, held.profile),
            )  # fmt: skip
        if confirm is not None and source in (
            held.profile if held is not None else None,
            None if before is None else before.get("profile"),
        ):
            confirm(source)
        stamp = maintenance.restamp(source, protected=protection)
        # Stamped for this profile already, both of them: a repeated command.
        changed = found is None or found.profile != config.profile
        cut_short = _prefix_after_database(
            config, source, objects.where, pg.mask_url(database_url), found, before
        )
        with cut_short:
            handed, unaudited = _hand_over_prefix(config, source, objects, maintenance, before)
        changed = changed or handed
    return {
        "profile": stamp.profile,
        "schema_version": stamp.schema_version,
        "created": stamp.created.isoformat(),
        "restamped_from": stamp.restamped_from,
        "changed": changed,
        **({} if unaudited is None else {"unaudited": unaudited}),
    }


def _describe_location(config: Config) -> str:
    from app.remote.objects import parse_blob_url

    database_url, blob_url = _urls(config)
    objects = parse_blob_url(blob_url, config.s3_endpoint_url)
    return f"database {pg.mask_url(database_url)} with objects in {objects}"


# --- app status -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteStatus:
    """What ``app status`` shows about a remote profile, at one moment.

    Attributes:
        location: the database and the object prefix, without credentials.
        exists: whether the database carries the app's stamp.
        holders: every live replica's row (host, pid, profile, since, url).
        stamp: the database's stamp, ``None`` if it has none yet.
        stamp_error: why the stamp could not be read (the database cannot be reached, or
            did not answer within database_wait_seconds); then ``exists`` and ``held`` are
            unknown, and :meth:`to_dict` shows them as ``None``.
        objects_error: why opening the object prefix would be refused, or why the bucket
            cannot be used (what ``app doctor`` says of it, with its remedy), if either.
    """

    location: str
    exists: bool
    holders: list[dict[str, Any]] = field(default_factory=list)
    stamp: dict[str, Any] | None = None
    stamp_error: str | None = None
    holders_unknown: str | None = None
    """Why the live replicas cannot be seen from here (a standby), if they cannot."""
    objects_error: str | None = None
    marked: str | None = None
    """None: a database's tables carry no mark of a profile but its stamp."""

    @property
    def held(self) -> bool:
        """Whether any replica was live."""
        return bool(self.holders)

    @property
    def holder(self) -> dict[str, Any] | None:
        """The longest-lived replica's row, if any."""
        return self.holders[0] if self.holders else None

    @property
    def held_by(self) -> str:
        """Every live replica in words."""
        named = "; ".join(describe_replica(holder) for holder in self.holders)
        return f"{len(self.holders)} live replica(s): {named}" if self.holders else "nobody"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (``app status --json``)."""
        # Unknown (null) rather than false when the database could not be read.
        unknown = self.stamp_error is not None
        return {
            "location": self.location,
            "exists": None if unknown else self.exists,
            "held": None if unknown or self.holders_unknown else self.held,
            "holders": [_jsonable(holder) for holder in self.holders],
            "stamp": self.stamp,
            "stamp_error": self.stamp_error,
            "holders_unknown": self.holders_unknown,
            "objects_error": self.objects_error,
        }


def _jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value.isoformat() if hasattr(value, "isoformat") else value
            for key, value in row.items()}  # fmt: skip


def describe(config: Config) -> RemoteStatus:
    """Who serves a remote profile and how its database is stamped; creates nothing."""
    database_url, _ = _urls(config)
    location = _describe_location(config)
    try:
        with (
            pg.connect(
                database_url, purpose="app status", autocommit=True, bounds=_bounds(config)
            ) as conn,
            pg.refusals(pg.mask_url(database_url), "the read of its stamp and holders"),
        ):
            stamp = pg.read_stamp(conn)
            if stamp is None and pg.app_schema(conn) is not None:
                # The app's table without its row: not "not stamped yet, served by nobody"
                # while a replica started before the row went may still serve (red team 37).
                raise DatabaseStampMissingError(
                    config.profile, pg.mask_url(database_url), pg.SCHEMA_VERSION
                )
            holders = pg.live_holders(conn) if stamp is not None else []
            standby = pg.in_recovery(conn)
    except (
        DatabaseUnavailableError,
        DatabaseStampMissingError,
        TablesOffSearchPathError,
        TablesShadowedError,
    ) as error:
        # Unread, as a database that does not answer: who serves it is unknown (red team
        # 37: a search_path hiding the app's tables made `app status` exit 78, no report).
        return RemoteStatus(location, False, stamp_error=error.message)
    if stamp is None:
        return RemoteStatus(location, False, objects_error=_objects_problem(config))
    shown = {
        "profile": stamp.profile,
        "schema_version": stamp.schema_version,
        "created_at": stamp.created.isoformat(),
        "restamped_from": stamp.restamped_from,
    }
    unseen = pg.standby_note(pg.mask_url(database_url)) if standby else None
    # A replica of this machine kept from running (SIGSTOP, a debugger, a frozen cgroup)
    # carries a data root's holder's fields for it, in `--json` too (red team 76 on the server).
    return RemoteStatus(
        location, True, [{**_jsonable(h), **paused_here(h)} for h in holders], shown, None,
        unseen, _objects_problem(config),
    )  # fmt: skip


def _objects_problem(config: Config) -> str | None:
    """What ``app doctor`` finds wrong with the bucket, the prefix or the database's binding
    to it, if anything: the refusal every other command gives (red team 42: `app status`
    said nothing of a prefix that every command refused, an emptied store among them)."""
    problems = [
        probe.problem
        for probe in diagnose(config)
        if probe.subject in ("bucket", "prefix", "binding") and probe.problem is not None
    ]
    return " ".join(problems) or None


# --- app doctor -----------------------------------------------------------------------------

# Bounds of doctor's waits: a database or an endpoint that does not answer is reported
# after this long, not after the serving defaults (10 s, and three S3 attempts).
_DOCTOR_CONNECT_SECONDS = 5
_DOCTOR_READ_SECONDS = 10
# A few names are enough to say that an unstamped prefix is not empty.
_SHOWN_NAMES = 6


def _secrets(config: Config) -> list[str]:
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    from app.config import DATABASE_SECRETS

    found = [config.s3_access_key_id, config.s3_secret_access_key, config.api_token]
    with contextlib.suppress(ProgrammingError):  # unparsable: the configuration refuses it
        params = conninfo_to_dict(_urls(config)[0])
        found += [str(params.get(name) or "") for name in DATABASE_SECRETS]
    return [secret for secret in found if secret]


def _scrubbed(text: str, secrets: list[str]) -> str:
    # The drivers' messages name hosts and users, not passwords; this holds even if one
    # someday echoes a URL or a key back.
    for secret in secrets:
        text = text.replace(secret, "******")
    return text


def _sentence(reason: str) -> str:
    # The drivers' reasons may end with their own punctuation ("...connections?").
    reason = reason.strip()
    return reason if reason.endswith((".", "?", "!")) else f"{reason}."


def diagnose(config: Config) -> list[Probe]:
    """What ``app doctor`` finds by reaching a remote profile's database and bucket.

    Read-only: the connection is put in read-only mode before anything is read, and the
    bucket is only asked (head, versioning, the stamp object, a listing of a few names).
    Nothing is created: an empty database or prefix is reported as "the first open stamps
    it". A database or endpoint that does not answer is a problem (exit 69) naming what,
    where its URL came from, and what to check; the other problems are what opening the
    storage would refuse (another profile's stamp, things of its own and no stamp, a newer
    schema: exit 78).
    """
    secrets = _secrets(config)
    seen: dict[str, Any] = {}
    probes = _diagnose_database(config, seen) + _diagnose_objects(config, seen)
    probes += _diagnose_binding(config, seen)
    return [
        Probe(
            p.subject,
            _scrubbed(p.found, secrets),
            None if p.problem is None else _scrubbed(p.problem, secrets),
            p.exit_code,
        )
        for p in probes
    ]


#: Doctor's finding of a connection the server refused (`pg.refused_connection`), by its
#: SQLSTATE; any other refusal came after the connection, of the app's settings.
_REFUSED_CONNECTIONS: Final = {
    "53300": "refused a connection at its limit",
    "28000": "refused the role's login",
    "28P01": "refused the password",
    "": "asks for a password, none given",  # libpq's own, no SQLSTATE (red team 75)
}


def _diagnose_database(config: Config, seen: dict[str, Any]) -> list[Probe]:
    import psycopg

    from app.errors import EX_UNAVAILABLE

    database_url, _ = _urls(config)
    where = pg.mask_url(database_url)
    source = config.sources.get("database_url", "?")
    try:
        conn = pg.connect(
            database_url,
            purpose="app doctor",
            autocommit=True,
            connect_timeout=_DOCTOR_CONNECT_SECONDS,
            bounds=_bounds(config),
        )
    except DatabaseTimeoutError as error:
        return [_database_silent(config, where, error.seconds)]
    except DatabaseRefusedError as error:
        # Connected, then refused (a statement_timeout of a millisecond): not "cannot
        # connect ... check that PostgreSQL runs" (red team 42).
        # Or refused the connection at a connection limit of the role's or the database's,
        # which names it (red team 73 on the remote backend), or refused its login: a role
        # NOLOGIN, no line of pg_hba.conf, a password refused (red team 75 on the remote
        # backend: each was "connected, then refused the app's settings").
        found = _REFUSED_CONNECTIONS.get(
            error.sqlstate, "connected, then refused the app's settings"
        )
        return [
            Probe("database", f"{where}: {found}",
                  f"profile {config.profile!r}: {error.message}", EX_UNAVAILABLE)
        ]  # fmt: skip
    except DatabaseUnavailableError as error:
        return [
            Probe(
                "database",
                f"{where}: cannot connect",
                f"profile {config.profile!r}: cannot connect to database {where} "
                f"(database_url from {source}): {_sentence(error.reason)} Check that "
                "PostgreSQL runs and accepts connections from this machine, and that "
                "database_url names it (host, port, database, user, password); nothing was "
                f"changed{error.environment}",
                EX_UNAVAILABLE,
            )
        ]
    with conn:
        try:
            frozen = _read_only_default(conn, config, where)
            # Doctor looks; should any statement below ever write, PostgreSQL refuses it.
            conn.execute("SET default_transaction_read_only = on")
            return _database_state(conn, config, where, seen) + frozen
        except pg.WaitTimeoutError as error:
            return [_database_silent(config, where, error.seconds)]
        except psycopg.Error as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            return [
                Probe(
                    "database",
                    f"{where}: connected, but could not read it",
                    f"profile {config.profile!r}: connected to database {where} (database_url "
                    f"from {source}) but could not read the app's tables: {_sentence(reason)} "
                    "Check that database_url's user owns the database (or may read it); "
                    "nothing was changed",
                    EX_UNAVAILABLE,
                )
            ]


# pg_settings.source, in words: where an operator set a session default.
_SOURCES = {
    "database": "the database's settings",
    "user": "the role's settings",
    "database user": "the role's settings in this database",
    "client": "the connection's options (database_url's options or PGOPTIONS)",
    "configuration file": "the server's configuration file",
    "command line": "the server's command line",
}


def _server_durability(conn: Any) -> list[Probe]:
    """The server's own settings that let a crash lose or damage what it said was committed,
    which no session of the app's can set: ``fsync`` and ``full_page_writes`` off (a quick
    bulk load's advice, a test cluster's). Said, not refused: the app's settings cannot
    change them, and a profile may run on such a server on purpose (the suite's own cluster
    does), but doctor said nothing of them (red team 64)."""
    rows = conn.execute(
        "SELECT name, source FROM pg_settings"
        " WHERE name IN ('fsync', 'full_page_writes') AND setting = 'off' ORDER BY name"
    ).fetchall()
    if not rows:
        return []
    named = " and ".join(f"{name} off (set by {_SOURCES.get(str(source), repr(str(source)))})"
                         for name, source in rows)  # fmt: skip
    on = "; ".join(f"ALTER SYSTEM SET {name} = on" for name, _ in rows)
    return [
        Probe(
            "server",
            f"{named}: a crash of the server's machine (a power cut, a kernel panic) can "
            "lose or damage changes the app was told were committed, which no setting of "
            f"the app's connections can prevent. As a superuser run `{on}; SELECT "
            "pg_reload_conf()` (a `-c` on the server's command line wins over both: remove it "
            "there and restart the server)",
        )
    ]


def _read_only_default(conn: Any, config: Config, where: str) -> list[Probe]:
    """A database (or role, or URL) that makes every transaction read-only, on a primary
    (a standby is the `replicas` line's): every change is refused (red team 42: `GET
    /ready` said "`app doctor` on this server says more", and doctor said "ok", since it
    sets the same for itself before it reads)."""
    from app.errors import EX_UNAVAILABLE

    row = conn.execute(
        "SELECT setting, source FROM pg_settings WHERE name = 'default_transaction_read_only'"
    ).fetchone()
    if row is None or row[0] != "on" or pg.in_recovery(conn):
        return []
    refused = DatabaseRefusedError(
        where,
        f"default_transaction_read_only is on for its connections (set by "
        f"{_SOURCES.get(str(row[1]), repr(row[1]))}), so every transaction is read-only",
        "25006",
        pg.refusal_remedy("25006", where) or "",
        "every change (uploads, deletes, new sessions, a replica's start)",
    )
    return [Probe("writes", "refused: every transaction is read-only", refused.message,
                  EX_UNAVAILABLE)]  # fmt: skip


def _diagnose_binding(config: Config, seen: dict[str, Any]) -> list[Probe]:
    """Whether the database and the prefix, each stamped for the profile, belong together,
    as opening them checks (red team 39: `app doctor` said "ok" for a database bound to
    another prefix, a prefix of another database, and a restored copy of the database,
    each of which `app serve` refused)."""
    from app.remote.errors import StorageMismatchError
    from app.remote.objects import binding_refusal

    if "binding" not in seen or "prefix" not in seen:
        return []
    (database_id, bucket, prefix, here, timeline, where) = seen["binding"]
    stamp, location, shown = seen["prefix"]
    error: AppError | None = None
    if database_id is None and stamp.get("database") is None:
        return [Probe("binding", "none yet: the next open binds the database to the prefix")]
    if database_id is None:
        # The next open binds this database, with a new id, to a prefix another one has.
        error = StorageMismatchError(
            "database", where, shown, str(stamp["database"]), database_id="(none yet)"
        )
    elif (bucket, prefix) != (location.bucket, location.prefix):
        error = StorageMismatchError("prefix", where, shown, f"s3://{bucket}/{prefix}")
    elif not stamp and seen.get("named"):
        # An empty prefix whose database's rows name objects there: the open refuses it.
        error = PrefixEmptiedError(
            config.profile, shown, where, seen["named"],
            protected=needs_confirmation(config.taking_needs_confirmation, config.profile),
        )  # fmt: skip
    else:
        database = (database_id, where, here, timeline)
        error = binding_refusal(
            config.profile, stamp, database, shown, config.taking_needs_confirmation
        )
    found = (
        f"database id {database_id} ({here}), bound to s3://{bucket}/{prefix}"
        if database_id is not None
        else f"the database is bound to no prefix yet; {shown} belongs to database id "
        f"{stamp['database']}"
    )
    if error is None:
        return [Probe("binding", found)]
    return [Probe("binding", found, error.message, error.exit_code)]


def _database_silent(config: Config, where: str, seconds: float) -> Probe:
    from app.errors import EX_UNAVAILABLE

    source = config.sources.get("database_url", "?")
    return Probe(
        "database",
        f"{where}: connected, then no answer within {seconds:g} s",
        f"profile {config.profile!r}: database {where} (database_url from {source}) accepted "
        f"the connection, then did not answer within {seconds:g} s (database_wait_seconds, "
        f"from {config.sources.get('database_wait_seconds', '?')}): it may be stopped or "
        "frozen (a process stopped with SIGSTOP, a host paused), overloaded, or the network "
        "to it may drop packets. Check it from its host (`pg_isready`, its log); nothing was "
        "changed",
        EX_UNAVAILABLE,
    )


def _database_state(conn: Any, config: Config, where: str, seen: dict[str, Any]) -> list[Probe]:
    from app.remote.errors import (
        SchemaTooNewError,
        TablesChangedError,
        TablesHookedError,
        UnloggedTablesError,
    )

    source = config.sources.get("database_url", "?")
    version = conn.info.server_version
    server = f"PostgreSQL {version // 10000}.{version % 10000}"
    probes = [Probe("database", f"{where}: reachable, {server} (database_url from {source})")]
    stamp = pg.read_stamp(conn)
    if stamp is None:
        return probes + _unstamped(conn, config, where, seen)
    tables, sequences = pg.unlogged(conn)
    stamped = (
        f"profile {stamp.profile}, schema version {stamp.schema_version} (this release: "
        f"{pg.SCHEMA_VERSION}), created {stamp.created.isoformat()}"
        + (f", re-stamped from {stamp.restamped_from}" if stamp.restamped_from else "")
    )
    error: AppError
    if stamp.profile != config.profile:
        # As the open says it (`_explained`): doctor said only "`app config` shows where
        # it came from" of an APP_DATABASE_URL it showed as the environment's (red team 74
        # on regress, round b).
        error = _explained(RemoteStampMismatchError(
            f"database {where}", "its table app_stamp", stamp.profile, config.profile,
            protected=needs_confirmation(config.taking_needs_confirmation, stamp.profile),
        ), config, "database_url")  # fmt: skip
        probes.append(Probe("stamp", stamped, error.message, error.exit_code))
    elif stamp.schema_version > pg.SCHEMA_VERSION:
        error = SchemaTooNewError(f"database {where}", stamp.schema_version, pg.SCHEMA_VERSION)
        probes.append(Probe("stamp", stamped, error.message, error.exit_code))
    else:
        probes.append(Probe("stamp", stamped))
        seen["binding"] = (*pg.binding(conn), pg.instance(conn), pg.timeline(conn), where)
        seen["named"] = pg.named_objects(conn)
    if tables or sequences:
        # The open refuses them (red team 62); doctor said "ok".
        unlogged = UnloggedTablesError(config.profile, where, tables, sequences)
        named = ", ".join(tables + sequences)
        probes.append(
            Probe("durability", f"UNLOGGED: {named}", unlogged.message, unlogged.exit_code)
        )
    probes += _server_durability(conn)
    found, undo = pg.hooks(conn)
    if found:
        # The open refuses them (red team 62); doctor said "ok".
        hooked = TablesHookedError(config.profile, where, found, undo)
        probes.append(
            Probe("triggers", f"{len(found)} not the app's, or off", hooked.message,
                  hooked.exit_code)
        )  # fmt: skip
    found, undo = pg.drift(conn)
    if found:
        # The open refuses them (red team 63); doctor said "ok".
        changed = TablesChangedError(config.profile, where, found, undo)
        probes.append(
            Probe("tables", f"{len(found)} changed from the app's", changed.message,
                  changed.exit_code)
        )  # fmt: skip
    if pg.in_recovery(conn):
        from app.errors import EX_UNAVAILABLE

        note = pg.standby_note(where)
        probes.append(
            Probe("replicas", "unknown: a standby", f"profile {config.profile!r}: {note}; "
                  "nothing was changed", EX_UNAVAILABLE)
        )  # fmt: skip
        return probes
    replicas = pg.live_holders(conn)
    if not replicas:
        probes.append(Probe("replicas", "none live"))
    for replica in replicas:
        probes.append(Probe("replica", describe_replica(_jsonable(replica))))
    for holder in pg.lock_holders(conn, "ExclusiveLock"):
        probes.append(
            Probe("maintenance", f"holds the database exclusively now ({holder}); replicas "
                  "cannot start until it ends")
        )  # fmt: skip
    # A lock of the app's that a prepared transaction holds is no process's, and outlives
    # restarts: every refusal behind it named a process to wait for (red team 71 on the
    # remote backend).
    for held in pg.prepared_transactions(conn):
        from app.errors import EX_UNAVAILABLE

        probes.append(
            Probe("prepared", pg.name_prepared(*held),
                  f"profile {config.profile!r}: database {where}: a "
                  f"{pg.describe_prepared(*held)}. It holds a "
                  "lock on the app's tables or one of the app's own locks: what waits for "
                  "it (a write, a replica's start, maintenance) is refused until it ends",
                  EX_UNAVAILABLE)
        )  # fmt: skip
    return probes


def _unstamped(conn: Any, config: Config, where: str, seen: dict[str, Any]) -> list[Probe]:
    """Doctor's ``stamp`` line for a database without the app's stamp, as its open finds it."""
    from app.remote.errors import (
        DatabaseStampMissingError,
        SchemaNotWritableError,
        UnloggedTablesError,
        UnstampedNotEmptyError,
    )

    error: AppError
    if pg.app_schema(conn) is not None:
        # The app's tables without their stamp row, refused as the open refuses it (red team
        # 62: doctor called them "tables of another application", and said nothing of their
        # being UNLOGGED, which is what a restart after a crash leaves of them).
        tables, sequences = pg.unlogged(conn)
        error = (
            UnloggedTablesError(config.profile, where, tables, sequences, emptied=True)
            if tables or sequences
            else DatabaseStampMissingError(config.profile, where, pg.SCHEMA_VERSION)
        )
        return [
            Probe("stamp", "none, though the app's tables are there", error.message,
                  error.exit_code)
        ]  # fmt: skip
    foreign = pg.foreign_tables(conn)
    if foreign:
        error = UnstampedNotEmptyError(config.profile, "database_url", f"database {where}", foreign)
        return [
            Probe("stamp", "none, and tables of another application", error.message,
                  error.exit_code)
        ]  # fmt: skip
    schema = conn.execute("SELECT current_schema()").fetchone()[0]
    if schema is not None and not pg.writable_schema(conn, schema):
        # The first open would be refused (red team 39: doctor said "ok").
        info = conn.info
        refused = SchemaNotWritableError(config.profile, where, str(schema), info.user, info.dbname)
        return [
            Probe("stamp", "none yet, and this role may not create the app's tables",
                  refused.message, refused.exit_code)
        ]  # fmt: skip
    seen["binding"] = (None, None, None, None, None, where)
    return [
        Probe(
            "stamp",
            "none yet: the database is empty; the first open creates the app's "
            f"tables and stamps it for {config.profile!r}",
        )
    ]


def _diagnose_objects(config: Config, seen: dict[str, Any]) -> list[Probe]:
    from app.errors import EX_UNAVAILABLE
    from app.remote.errors import (
        ObjectStoreUnavailableError,
        S3ClientSettingsError,
        S3EndpointElsewhereError,
        StoreClockSkewError,
    )
    from app.remote.objects import ObjectStore

    _, blob_url = _urls(config)
    source = config.sources.get("blob_url", "?")
    endpoint = config.s3_endpoint_url or "the client's default (AWS)"
    endpoint_source = config.sources.get("s3_endpoint_url", "?")
    try:
        objects = ObjectStore(
            blob_url,
            config.s3_endpoint_url,
            config.s3_access_key_id,
            config.s3_secret_access_key,
            connect_timeout=_DOCTOR_CONNECT_SECONDS,
            read_timeout=_DOCTOR_READ_SECONDS,
            max_attempts=1,
            credential_process_seconds=config.s3_credential_process_seconds,
        )
    except S3EndpointElsewhereError as error:
        # Not "the client's default (AWS)": where its requests would go (red team 62).
        return [
            Probe("bucket", f"not asked: the S3 client would send its requests to "
                  f"{error.reached}", f"profile {config.profile!r}: {error.message}",
                  error.exit_code)
        ]  # fmt: skip
    shown = f"{objects.location.bucket} at {endpoint}"
    bucket = f"bucket {shown}"
    try:
        versioning = objects.bucket_versioning()
    except StoreClockSkewError as error:
        # Not "the credentials may not use the bucket" (red team 42).
        return [
            Probe("bucket", f"{shown}: refused, the clocks disagree",
                  f"profile {config.profile!r}: {error.message}", EX_UNAVAILABLE)
        ]  # fmt: skip
    except S3ClientSettingsError as error:
        # A setting of the S3 client's own that sends no request to the endpoint (red team
        # 62: "check that the endpoint answers ... and the credentials").
        return [
            Probe("bucket", f"{shown}: not asked, a setting of the S3 client's refuses it",
                  f"profile {config.profile!r}: {error.message}", error.exit_code)
        ]  # fmt: skip
    except ObjectStoreUnavailableError as error:
        return [
            Probe(
                "bucket",
                f"{shown}: cannot use it",
                f"profile {config.profile!r}: cannot use {bucket} (blob_url from {source}, "
                f"s3_endpoint_url from {endpoint_source}): {_sentence(error.reason)} "
                + (
                    f"{error.remedy}; nothing was changed"
                    if error.store_failing
                    else "Check that the endpoint answers from this machine, that the bucket "
                    f"exists, and that the credentials {objects.credentials} may use it; "
                    "nothing was changed"
                ),
                EX_UNAVAILABLE,
            )
        ]
    state = {"Enabled": "versioning on", "Suspended": "versioning suspended"}.get(
        str(versioning), "versioning off"
    )
    probes = [Probe("bucket", f"{shown}: reachable, {state}")]
    return [*probes, *_lifecycle(config, objects), *_diagnose_prefix(config, objects, source, seen)]


def _lifecycle(config: Config, objects: ObjectStore) -> list[Probe]:
    """Doctor's ``lifecycle`` line: the bucket's rules that expire the prefix's objects
    (`ObjectStore.expiring_rules`), which delete files the app acknowledged once they are
    old enough; the bucket's policy, not refused (red team 71 on the remote backend)."""
    from app.errors import EX_CONFIG

    rules = objects.expiring_rules()
    if not rules:
        return []
    bucket = objects.location.bucket
    return [
        Probe(
            "lifecycle",
            "; ".join(rules),
            f"profile {config.profile!r}: the lifecycle of bucket {bucket!r} expires the "
            f"objects of prefix {objects.where}: {'; '.join(rules)}. The store deletes each "
            "file the app acknowledged there once that old (in a bucket that keeps versions, "
            "hides it behind a delete marker), the prefix's stamp object with them, which no "
            "lock of the app's stops: remove the Expiration from that rule, or narrow its "
            "prefix away from the profile's (`aws s3api get-bucket-lifecycle-configuration "
            f"--bucket {bucket}` shows the rules). A rule that expires only noncurrent "
            "versions (NoncurrentVersionExpiration) or aborts unfinished uploads leaves "
            "every file as it is",
            EX_CONFIG,
        )
    ]


def _diagnose_prefix(
    config: Config, objects: ObjectStore, source: str, seen: dict[str, Any]
) -> list[Probe]:
    """`_diagnose_objects`' probe of the prefix, once the bucket answered."""
    from app.errors import EX_UNAVAILABLE
    from app.remote.errors import (
        InsideTestRunError,
        ObjectStoreUnavailableError,
        UnstampedNotEmptyError,
    )

    probes: list[Probe] = []
    try:
        # As its open does: a prefix inside a test run's scratch prefix was "empty; the
        # first open stamps it", exit 0, and every command then refused it (red team 67
        # on regress, rt-regress67a).
        objects.refuse_inside_a_run(config.profile)
    except InsideTestRunError as error:
        probes.append(
            Probe("prefix", f"{objects.where}: inside a test run's scratch prefix",
                  error.message, error.exit_code)
        )  # fmt: skip
        return probes
    except ObjectStoreUnavailableError:
        pass  # the read below says so, naming the prefix
    try:
        stamp = objects.read_stamp()
        names = [] if stamp is not None else objects.first_names(_SHOWN_NAMES + 1)
    except ObjectStoreUnavailableError as error:
        probes.append(
            Probe(
                "prefix",
                f"{objects.where}: cannot read it",
                f"profile {config.profile!r}: cannot read object prefix {objects.where} "
                f"(blob_url from {source}): {_sentence(error.reason)} "
                + (
                    error.remedy
                    if error.store_failing
                    else "Check that the credentials may read and list it"
                )
                + "; nothing was changed",
                EX_UNAVAILABLE,
            )
        )
        return probes
    if stamp is not None:
        stamped = str(stamp.get("profile"))
        found = f"{objects.where}: stamp object {STAMP_NAME} names profile {stamped}"
        if stamped == config.profile:
            probes.append(Probe("prefix", found))
            seen["prefix"] = (stamp, objects.location, objects.where)
        else:
            # Another profile's, bound to another database: no re-stamp (red team 41).
            taken = None
            if "binding" in seen:
                database, *_, shown = seen["binding"]
                taken = another_database(
                    config.profile, stamp, objects.where, (database, shown, None, None)
                )
            mismatch: AppError = taken or _explained(RemoteStampMismatchError(
                f"object prefix {objects.where}", f"its object {STAMP_NAME}", stamped,
                config.profile,
                protected=needs_confirmation(config.taking_needs_confirmation, stamped),
            ), config, "blob_url")  # fmt: skip
            probes.append(Probe("prefix", found, mismatch.message, mismatch.exit_code))
    elif names and all(objects.is_blob_name(name) for name in names):
        lost = PrefixStampMissingError(
            config.profile, objects.where, names,
            protected=needs_confirmation(config.taking_needs_confirmation, config.profile),
        )  # fmt: skip
        probes.append(
            Probe("prefix", f"{objects.where}: no stamp object, and the app's objects",
                  lost.message, lost.exit_code)
        )  # fmt: skip
    elif names:
        refused = UnstampedNotEmptyError(
            config.profile, "blob_url", f"object prefix {objects.where}", names
        )
        probes.append(
            Probe("prefix", f"{objects.where}: no stamp object, and objects of another "
                  "application", refused.message, refused.exit_code)
        )  # fmt: skip
    else:
        # Not stamped by an open while the database's rows name objects here (the binding
        # line says why).
        stamps = "" if seen.get("named") else f"; the first open stamps it for {config.profile!r}"
        probes.append(Probe("prefix", f"{objects.where}: empty{stamps}"))
        seen["prefix"] = ({}, objects.location, objects.where)
    return probes


def _hand_over_prefix(
    config: Config,
    source: str,
    objects: ObjectStore,
    maintenance: pg.Maintenance,
    before: Mapping[str, Any] | None,
) -> tuple[bool, str | None]:
    """`restamp`'s change of the prefix, once the database's is made: whether it changed
    the prefix, and why the audit log could not record it (None if it did)."""
    protection = config.taking_needs_confirmation
    unaudited: str | None = None
    changed = False
    if before is None:
        # A prefix that lost its stamp and holds the app's objects: written back when
        # this database is bound to it and its rows name objects there (red team 37: no
        # command brought such a prefix back); anything else is refused by open.
        location = objects.location
        blobs = [n for n in objects.first_names(1000) if objects.is_blob_name(n)]
        database_id = (
            maintenance.names_objects(location.bucket, location.prefix, blobs) if blobs else None
        )
        if database_id is not None:
            objects.restore_stamp(config.profile, database_id, pg.instance(maintenance.conn))
            unaudited = maintenance.audit_made(
                "restamp", objects.where, {"restored": True, "to": config.profile}
            )
        else:
            objects.open(config.profile, protected=protection)
        changed = True
    elif before.get("profile") != config.profile:
        objects.restamp(source, config.profile)
        unaudited = maintenance.audit_made(
            "restamp", objects.where, {"from": source, "to": config.profile}
        )
        changed = True
    else:
        changed, unaudited = adopt_copy(config.profile, objects, maintenance)
    return changed, unaudited


def adopt_copy(
    profile: str, objects: ObjectStore, maintenance: pg.Maintenance
) -> tuple[bool, str | None]:
    """`restamp`'s adoption of a copy of the database the prefix belongs to (a restore),
    which makes it the one whose rows name its objects (red team 39): the original is
    refused from now on. Whether it changed the prefix's stamp, and why the audit log could
    not record it (None if it did). The ``adopt-copy`` row's time is what `app data check`
    keeps the objects no row names from before (red team 70 on the remote backend)."""
    location = objects.location
    bound = maintenance.bound_to(location.bucket, location.prefix)
    here = pg.instance(maintenance.conn)
    old = (
        None
        if bound is None
        else objects.adopt(profile, bound, here, pg.timeline(maintenance.conn))
    )
    if old is None:
        return False, None
    unaudited = maintenance.audit_made(
        "adopt-copy",
        objects.where,
        {"database": bound, "from": old.get("instance"), "to": here},
    )
    return True, unaudited


@contextlib.contextmanager
def _prefix_after_database(
    config: Config,
    source: str,
    where: str,
    database: str,
    found: pg.Stamp | None,
    before: Mapping[str, Any] | None,
) -> Iterator[None]:
    """A re-stamp's change of the prefix, made after its database's: the object store's
    refusal there is the command cut short, saying what it did and how to finish it.

    It was the store's refusal alone, "check s3_endpoint_url, blob_url and the credentials"
    (or, for a clock, "nothing was changed"), with the database already handed over and
    audited, and every command of either profile refused until the prefix was (red team 51).
    """
    try:
        yield
    except ObjectStoreUnavailableError as error:
        if found is None or found.profile == config.profile:
            raise  # the database was not changed by this command: the refusal stands
        import shlex

        confirm = " --yes-i-mean-it" if config.taking_needs_confirmation(source) else ""
        command = f"app data restamp --profile {config.profile} --from {shlex.quote(source)}"
        stamped = (
            f"stamped {str(before.get('profile'))!r}" if before is not None else "without a stamp"
        )
        raise ObjectStoreCutShortError(
            command + confirm,
            where,
            f"the write of the prefix's stamp ({STAMP_NAME})",
            error.reason,
            f"By then it had re-stamped database {database} from {source!r} to {config.profile!r}",
            f"the object prefix {stamped}, so every command and replica of either profile "
            "is refused until it is finished",
            "The database's re-stamp is in its audit log",
            f"it finds the database stamped {config.profile!r} already and re-stamps the prefix",
        ) from None
