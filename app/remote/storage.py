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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.remote import pg
from app.remote.errors import (
    RemoteStampMismatchError,
    ReplicasLiveError,
    describe_replica,
    needs_confirmation,
)
from app.remote.objects import STAMP_NAME

if TYPE_CHECKING:
    from app.config import Config
    from app.remote.objects import ObjectStore
    from app.remote.store import RemoteStore

__all__ = ["RemoteStatus", "describe", "open_remote", "restamp"]

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
    )


@contextlib.contextmanager
def _exclusive(
    database_url: str, profile: str, wanted: str, timeout: float
) -> Iterator[pg.Maintenance]:
    """:func:`pg.maintenance`, retried for ``timeout`` seconds while only another maintenance
    command holds the database (it ends soon); live replicas are refused at once."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.ExitStack() as stack:
            try:
                maintenance = stack.enter_context(pg.maintenance(database_url, profile, wanted))
            except ReplicasLiveError as error:
                if error.replicas or time.monotonic() >= deadline:
                    raise
                time.sleep(_RETRY_SECONDS)
                continue
            yield maintenance
            return


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

    database_url, _ = _urls(config)
    protection = config.taking_needs_confirmation
    pg.open_database(database_url, config.profile, protected=protection)
    objects = _objects(config)
    objects.open(config.profile, protected=protection)
    with contextlib.ExitStack() as held:
        holder: pg.Holder | None = None
        if writer and kind in _REPLICA_KINDS:
            holder = held.enter_context(pg.Holder(database_url, config.profile))
        elif writer:
            wanted = wanted or f"open the database as a {kind} process"
            held.enter_context(_exclusive(database_url, config.profile, wanted, timeout))
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
            max_upload_bytes=config.max_upload_bytes,
            max_files_per_session=config.max_files_per_session,
            on_close=None if holder is not None else release.close,
        )
    except BaseException:
        release.close()
        raise


def restamp(config: Config, from_profile: str) -> Mapping[str, Any]:
    """Hand the database and the prefix stamped ``from_profile`` to ``config.profile``.

    Under maintenance (refused while any replica lives), audited in ``app_audit``; the
    database first, then the prefix, so that a run interrupted between the two is finished
    by running the same command again.
    """
    database_url, _ = _urls(config)
    source = from_profile.lower()
    protection = config.taking_needs_confirmation
    with pg.connect(database_url, purpose="app restamp") as conn:
        stamped = pg.read_stamp(conn) is not None
    if not stamped:
        # Nothing of the app's there yet: creating it stamps it for this profile at once
        # (or refuses a database with tables of its own).
        pg.open_database(database_url, config.profile, protected=protection)
    objects = _objects(config)
    wanted = f"re-stamp {_describe_location(config)} from {source!r} to {config.profile!r}"
    with _exclusive(database_url, config.profile, wanted, 1.0) as maintenance:
        before = objects.read_stamp()
        if before is not None and before.get("profile") not in (source, config.profile):
            # Refused before the database changes, so that nothing is left half handed over.
            raise RemoteStampMismatchError(
                f"object prefix {objects.where}", f"its object {STAMP_NAME}",
                str(before.get("profile")), config.profile,
                protected=needs_confirmation(protection, source),
            )  # fmt: skip
        stamp = maintenance.restamp(source, protected=protection)
        if before is None:
            objects.open(config.profile, protected=protection)
        elif before.get("profile") != config.profile:
            objects.restamp(source, config.profile)
            maintenance.audit("restamp", objects.where, {"from": source, "to": config.profile})
    return {
        "profile": stamp.profile,
        "schema_version": stamp.schema_version,
        "created": stamp.created.isoformat(),
        "restamped_from": stamp.restamped_from,
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
        stamp_error: why the stamp could not be read (the database cannot be reached).
    """

    location: str
    exists: bool
    holders: list[dict[str, Any]] = field(default_factory=list)
    stamp: dict[str, Any] | None = None
    stamp_error: str | None = None

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
        return {
            "location": self.location,
            "exists": self.exists,
            "held": self.held,
            "holders": [_jsonable(holder) for holder in self.holders],
            "stamp": self.stamp,
            "stamp_error": self.stamp_error,
        }


def _jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value.isoformat() if hasattr(value, "isoformat") else value
            for key, value in row.items()}  # fmt: skip


def describe(config: Config) -> RemoteStatus:
    """Who serves a remote profile and how its database is stamped; creates nothing."""
    from app.remote.errors import DatabaseUnavailableError

    database_url, _ = _urls(config)
    location = _describe_location(config)
    try:
        with pg.connect(database_url, purpose="app status", autocommit=True) as conn:
            stamp = pg.read_stamp(conn)
            holders = pg.live_holders(conn) if stamp is not None else []
    except DatabaseUnavailableError as error:
        return RemoteStatus(location, False, stamp_error=error.message)
    if stamp is None:
        return RemoteStatus(location, False)
    shown = {
        "profile": stamp.profile,
        "schema_version": stamp.schema_version,
        "created_at": stamp.created.isoformat(),
        "restamped_from": stamp.restamped_from,
    }
    return RemoteStatus(location, True, [_jsonable(h) for h in holders], shown)
