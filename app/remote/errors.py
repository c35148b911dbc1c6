"""Errors of the PostgreSQL + object storage backend, in the style of :mod:`app.errors`.

Each names what was refused, why, who holds it, and the command that resolves it. Database
URLs appear only through :func:`app.remote.pg.mask_url` (never with a password), and object
locations without credentials.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from app.errors import (
    EX_SOFTWARE,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    AppError,
    ConfigError,
    StorageError,
)

_CONFIRM = " --yes-i-mean-it"


def describe_replica(holder: Mapping[str, Any]) -> str:
    """One line naming a live replica: host, pid, profile, since and URL."""
    parts = [f"host {holder.get('host') or '?'}", f"pid {holder.get('pid') or '?'}"]
    if holder.get("profile"):
        parts.append(f"profile {holder['profile']}")
    if holder.get("since"):
        parts.append(f"since {holder['since']}")
    if holder.get("url"):
        parts.append(f"serving {holder['url']}")
    return ", ".join(parts)


class ResourceOverlapError(ConfigError):
    """Two profiles name the same database, or overlapping object prefixes."""

    code = "resource_overlap"

    def __init__(
        self,
        kind: str,
        first: str,
        first_value: str,
        first_source: str,
        second: str,
        second_value: str,
        second_source: str,
    ) -> None:
        self.kind = kind
        self.first = first
        self.first_value = first_value
        self.first_source = first_source
        self.second = second
        self.second_value = second_value
        self.second_source = second_source
        key = "database_url" if kind == "database" else "blob_url"
        relation = "the same database" if kind == "database" else "overlapping object prefixes"
        super().__init__(
            f"profiles {first!r} and {second!r} name {relation}: "
            f"{first} -> {first_value} (from {first_source}), "
            f"{second} -> {second_value} (from {second_source}). "
            f"Every profile needs its own {kind}; change {key} for one of them"
        )


class RemoteStampMismatchError(ConfigError):
    """The database or the object prefix is stamped with another profile."""

    code = "profile_stamp_mismatch"

    def __init__(
        self, what: str, where: str, stamped: str, requested: str, *, protected: bool = False
    ) -> None:
        self.what = what
        self.where = where
        self.stamped = stamped
        self.requested = requested
        self.protected = protected
        confirm = _CONFIRM if protected or "production" in (stamped, requested) else ""
        super().__init__(
            f"{what} belongs to profile {stamped!r} (see {where}) but profile {requested!r} "
            f"tried to open it. If it really should now serve {requested!r}, re-stamp it "
            f"explicitly: app data restamp --profile {requested} --from {stamped}{confirm}"
        )


class UnstampedNotEmptyError(ConfigError):
    """A database with other tables, or a prefix with other objects, and no stamp."""

    code = "unstamped_not_empty"

    def __init__(self, profile: str, key: str, what: str, found: Sequence[str]) -> None:
        self.profile = profile
        self.key = key
        self.what = what
        self.found = tuple(found)
        shown = ", ".join(self.found[:5]) + (", ..." if len(self.found) > 5 else "")
        super().__init__(
            f"profile {profile!r}: {what} is not empty and has no profile stamp, and it holds "
            f"things that are not the app's ({shown}); refusing to adopt it. "
            f"Point {key} at a new or empty one"
        )


class SchemaTooNewError(ConfigError):
    """The database was stamped by a newer release of the app."""

    code = "schema_too_new"

    def __init__(self, what: str, found: int, known: int) -> None:
        self.what = what
        self.found = found
        self.known = known
        super().__init__(
            f"{what} has schema version {found}, this release of the app knows up to {known}; "
            "nothing was changed. Upgrade the app (every replica) to the release that wrote it"
        )


class DatabaseUnavailableError(AppError):
    """The database server cannot be reached or refused the connection."""

    exit_code = EX_UNAVAILABLE
    code = "database_unavailable"
    http_status = 503

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(
            f"cannot connect to database {where}: {reason}. Check that the server runs and "
            "that database_url (APP_DATABASE_URL) names it; `app doctor` checks the settings"
        )


class ObjectStoreUnavailableError(AppError):
    """The object store cannot be reached, or refused the credentials or the bucket."""

    exit_code = EX_UNAVAILABLE
    code = "object_store_unavailable"
    http_status = 503

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(
            f"cannot use object store {where}: {reason}. Check s3_endpoint_url, blob_url and "
            "the credentials s3_access_key_id / s3_secret_access_key; `app doctor` checks them"
        )


class ObjectMissingError(StorageError):
    """A row names an object that the object store does not have."""

    code = "object_missing"

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(
            f"object {where} is recorded but missing from the object store; nothing was "
            "changed. `app data check` lists such rows and objects"
        )


class ReplicasLiveError(AppError):
    """Destructive maintenance while replicas hold the database (or another maintenance)."""

    exit_code = EX_TEMPFAIL
    code = "replicas_live"
    http_status = 409

    def __init__(
        self, wanted: str, where: str, replicas: Sequence[Mapping[str, Any]], others: str = ""
    ) -> None:
        self.wanted = wanted
        self.where = where
        self.replicas = tuple(dict(replica) for replica in replicas)
        self.others = others
        if self.replicas:
            named = "; ".join(describe_replica(replica) for replica in self.replicas)
            stop = "stop every one of them (on its own machine), then retry"
            held = f"{len(self.replicas)} live replica(s) hold it: {named}"
        else:
            held = f"it is held by {others or 'another connection that published no details'}"
            stop = "wait for that maintenance command to finish, then retry"
        super().__init__(
            f"cannot {wanted}: database {where} is in use; {held}. Nothing was changed; {stop}. "
            "`app status` lists the live replicas"
        )


class MaintenanceRunningError(AppError):
    """A replica cannot start while maintenance holds the database exclusively."""

    exit_code = EX_TEMPFAIL
    code = "maintenance_running"
    http_status = 503

    def __init__(self, where: str, holder: str) -> None:
        self.where = where
        self.holder = holder
        super().__init__(
            f"cannot serve database {where}: a maintenance command holds it exclusively "
            f"({holder}). Wait for it to finish, then start the server again"
        )


class HolderLostError(AppError):
    """A replica's connection (and with it its shared lock) is gone; writes are refused."""

    exit_code = EX_SOFTWARE
    code = "holder_lost"
    http_status = 503

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(
            f"lost the connection that holds database {where} ({reason}); maintenance could "
            "now take it, so this server refuses every write and stops. Restart the server "
            "once the database is reachable"
        )

    def to_dict(self) -> dict[str, Any]:
        """Over HTTP: the refusal without the database's address."""
        return {
            "code": self.code,
            "message": (
                "this server lost its connection to the database, so it refuses every write and "
                "is stopping; nothing was written. Retry once the server is restarted"
            ),
        }
