"""Errors of the PostgreSQL + object storage backend, in the style of :mod:`app.errors`.

Each names what was refused, why, who holds it, and the command that resolves it. Database
URLs appear only through :func:`app.remote.pg.mask_url` (never with a password), and object
locations without credentials.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import field
from typing import Any

from app.errors import (
    EX_SOFTWARE,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    AppError,
    ConfigError,
    StorageError,
    StoreError,
    UnreadableSessionError,
    restamp_advice,
)

_CONFIRM = " --yes-i-mean-it"

#: The credentials a profile's own settings give (`ObjectStore.credentials` otherwise).
STATIC_CREDENTIALS = "s3_access_key_id / s3_secret_access_key"

Protection = bool | Callable[[str], bool]
"""Whether taking storage from the profile it is stamped with needs ``--yes-i-mean-it``: a
flag, or a function of the stamped profile (the caller's `Config` knows which are protected)."""


def needs_confirmation(protection: Protection, stamped: str) -> bool:
    return protection(stamped) if callable(protection) else protection


def describe_replica(holder: Mapping[str, Any]) -> str:
    """One line naming a live replica: host, pid, profile, since and URL."""
    parts = [f"host {holder.get('host') or '?'}", f"pid {holder.get('pid') or '?'}"]
    if holder.get("profile"):
        parts.append(f"profile {holder['profile']}")
    if holder.get("since"):
        parts.append(f"since {holder['since']}")
    if holder.get("url"):
        parts.append(f"serving {holder['url']}")
    paused = _paused_here(holder)
    if holder.get("stopping_since"):
        # Told to stop, it finishes the requests in flight: a second Ctrl-C cuts them. One
        # that is paused as well finishes nothing until it runs again, and was told to be
        # waited for, for ever (red team 75 on regress, round c).
        parts.append(
            f"stopping since {holder['stopping_since']}, finishing the requests in flight"
            + (
                " once it runs again"
                if paused
                else ": wait for it to exit (a second Ctrl-C, SIGINT, cuts them)"
            )
        )
    parts.extend(paused)
    return ", ".join(parts)


def _paused_here(holder: Mapping[str, Any]) -> list[str]:
    """How a live replica of this machine is kept from running (`app.lock.paused_words`):
    stopped, at a debugger's breakpoint or frozen, it serves nothing and acts on no stop, as
    a data root's holder is said to (red team 75 on serve --workers). Read only here: a
    host's rows are not checked from another. From the row's own `paused_here` fields where
    it has them (`app status`: its words and its ``--json`` say the same)."""
    pid = holder.get("pid")
    if type(pid) is int and pid > 0 and holder.get("host") == socket.gethostname():
        from app.lock import PAUSED_KEYS, paused_words

        if PAUSED_KEYS.isdisjoint(holder):
            return paused_words(pid)
        return paused_words(pid, {k: v for k, v in holder.items() if k in PAUSED_KEYS})
    return []


def paused_here(holder: Mapping[str, Any]) -> dict[str, Any]:
    """`_paused_here`'s fields (`app.lock.paused_fields`: ``stopped``, ``traced_by``,
    ``frozen``, ``thaw``) for a live replica of this machine; empty for one that runs or is
    another host's. ``app status --json`` gave none: a worker of `serve --workers` stopped
    with SIGSTOP was said so in words alone, and a monitor reading the JSON saw a replica
    that serves (red team 76 on the server)."""
    pid = holder.get("pid")
    if type(pid) is int and pid > 0 and holder.get("host") == socket.gethostname():
        from app.lock import paused_fields

        return paused_fields(pid)
    return {}


class ResourceOverlapError(ConfigError):
    """Two profiles name the same database, or overlapping object prefixes."""

    code = "resource_overlap"

    kind: str
    first: str
    first_value: str
    first_source: str
    second: str
    second_value: str
    second_source: str
    #: How they overlap, where the values do not show it (red team 57: an endpoint's host
    #: that names a bucket).
    note: str = field(default="", kw_only=True)

    @property
    def message(self) -> str:
        key = "database_url" if self.kind == "database" else "blob_url"
        relation = "the same database" if self.kind == "database" else "overlapping object prefixes"
        note = f" ({self.note})" if self.note else ""
        return (
            f"profiles {self.first!r} and {self.second!r} name {relation}: "
            f"{self.first} -> {self.first_value} (from {self.first_source}), "
            f"{self.second} -> {self.second_value} (from {self.second_source}){note}. "
            f"Every profile needs its own {self.kind}; change {key} for one of them"
        )


class RemoteStampMismatchError(ConfigError):
    """The database or the object prefix is stamped with another profile."""

    code = "profile_stamp_mismatch"

    what: str
    where: str
    stamped: str
    requested: str
    protected: bool = field(default=False, kw_only=True)
    #: Why the setting named this storage, where the environment explains it (red team 74).
    came_from: str = field(default="", kw_only=True)

    @property
    def message(self) -> str:
        setting = "database_url" if self.what.startswith("database") else "blob_url"
        advice = restamp_advice(
            self.stamped,
            self.requested,
            setting,
            protected=self.protected,
            came_from=self.came_from,
        )
        return (
            f"{self.what} belongs to profile {self.stamped!r} (see {self.where}) but profile "
            f"{self.requested!r} tried to open it; nothing was changed. {advice}"
        )


class UnstampedNotEmptyError(ConfigError):
    """A database with other tables, or a prefix with other objects, and no stamp."""

    code = "unstamped_not_empty"

    profile: str
    key: str
    what: str
    found: Sequence[str]

    def __post_init__(self) -> None:
        self.found = tuple(self.found)
        super().__post_init__()

    @property
    def message(self) -> str:
        shown = ", ".join(self.found[:5]) + (", ..." if len(self.found) > 5 else "")
        return (
            f"profile {self.profile!r}: {self.what} is not empty and has no profile stamp, and "
            f"it holds things that are not the app's ({shown}); refusing to adopt it. "
            f"Point {self.key} at a new or empty one"
            + (
                # A new database is a copy of template1, which a DBA may have given tables
                # of their own: the new one then held them too (red team 49).
                " (`CREATE DATABASE <name> TEMPLATE template0` makes one without what "
                "template1 holds)"
                if self.key == "database_url"
                else ""
            )
        )


class InsideTestRunError(ConfigError):
    """A profile other than testing opening an object prefix at or below a test run's
    scratch prefix, which that run's tests write in and its end empties."""

    code = "inside_test_run"

    profile: str
    where: str
    scratch: str
    run: str

    @property
    def message(self) -> str:
        relation = "is" if self.where == self.scratch else "lies inside"
        return (
            f"profile {self.profile!r}: object prefix {self.where} {relation} a test run's "
            f"scratch prefix, {self.scratch} (its marker .app-pytest-run.json names "
            f"{self.run}): that run's tests write there, and its end empties what it wrote; "
            f"refusing to open it, and nothing was written. Point blob_url of profile "
            f"{self.profile!r} at a prefix outside testing's scratch prefixes (outside "
            "testing's blob_url, under which each test run draws its own)"
        )


def from_pgoptions(options: str) -> str:
    """The sentence a refusal adds when ``options``, libpq's ``PGOPTIONS`` in this process's
    environment, sets the setting it names: no ``ALTER`` of the database or the role undoes
    it (red team 39: every such remedy sent the operator to the wrong place)."""
    if not options:
        return ""
    import shlex  # here: only a refusal pays for it

    return (
        f". Here it comes from this process's environment: PGOPTIONS={shlex.quote(options)}, "
        "which libpq sends with every connection whose database_url gives no options= "
        "(pg_settings.source says 'client'), and which no ALTER DATABASE or ALTER ROLE "
        "undoes: unset PGOPTIONS where it is set (a shell's profile, the service's "
        "Environment= or EnvironmentFile=), or give database_url options of its own"
    )


class _SearchPathError(ConfigError):
    """Where the connection's ``search_path`` finds the app's tables: not, or twice."""

    where: str
    schemas: Sequence[str]
    search_path: str
    pgoptions: str = field(default="", kw_only=True)
    """``PGOPTIONS`` of this process's environment, when it sets ``search_path``."""

    def __post_init__(self) -> None:
        self.schemas = tuple(self.schemas)
        super().__post_init__()


class TablesOffSearchPathError(_SearchPathError):
    """The app's tables are in a schema that the connection's ``search_path`` leaves out."""

    code = "tables_off_search_path"
    current: str | None = field(default=None, kw_only=True)
    """A schema on the path that exists without the app's tables (``current_schema()``)."""

    @property
    def message(self) -> str:
        shown = ", ".join(self.schemas)
        first = self.schemas[0] if self.schemas else "public"
        if not self.schemas:
            return (
                f"database {self.where} has no schema on this connection's search_path "
                f"({self.search_path!r}) to create the app's tables in: none of them exists. "
                "Refusing to use it; nothing was changed. The search_path comes from the "
                "database, the app's role, or options in database_url: `ALTER DATABASE "
                "<dbname> RESET search_path`, `ALTER ROLE <role> RESET search_path` and "
                "`ALTER ROLE <role> IN DATABASE <dbname> RESET search_path`, or "
                "`options=-c search_path=public` in database_url, or create the schema it names"
            ) + from_pgoptions(self.pgoptions)
        return (
            f"database {self.where} has the app's tables (its stamp, app_stamp) in schema "
            f"{shown}, which this connection's search_path ({self.search_path!r}) leaves "
            "out: the app would not find its own rows and would take the database for one "
            "it never opened. Refusing to use it; nothing was changed. The search_path comes "
            "from the database, the app's role, or options in database_url: put the schema "
            "back with `ALTER DATABASE <dbname> RESET search_path`, `ALTER ROLE <role> "
            "RESET search_path` and `ALTER ROLE <role> IN DATABASE <dbname> RESET "
            f"search_path`, or add `options=-c search_path={first}` to database_url"
            + self._another_profile()
        ) + from_pgoptions(self.pgoptions)

    def _another_profile(self) -> str:
        # Red team 42: a schema of its own in production's database, given to staging, was
        # told only to put production's schema on the path, which hands it production's rows.
        if self.current is None:
            return ""
        return (
            f". If schema {self.current} is meant for another profile, that does not "
            "separate them: the app's locks and replicas are the database's, and each "
            "profile needs a database of its own. Point that profile's database_url at a new "
            "database instead"
        )


class TablesShadowedError(_SearchPathError):
    """The app's tables are in two schemas on the connection's ``search_path``: a copy of
    them (a backup restored beside them, a schema named after the role) shadows the app's."""

    code = "tables_shadowed"

    @property
    def message(self) -> str:
        first, *others = self.schemas
        shown = ", ".join(others)
        return (
            f"database {self.where} has the app's tables (a stamp, app_stamp) in schema "
            f"{first} and again in schema {shown}, all on this connection's search_path "
            f"({self.search_path!r}; '\"$user\"' is the role's own schema): a copy of them "
            "(a backup restored beside them, a schema named after the app's role) would be "
            f"read and written in place of the app's, whichever comes first ({first}), and a "
            "repair would delete the objects only the other one names. Refusing to use it; "
            "nothing was changed. Move the copy off the path (`ALTER SCHEMA <copy> RENAME "
            "TO <copy>_backup`) or drop it, or name the app's schema alone with "
            "`options=-c search_path=<schema>` in database_url"
        )


class PrefixStampMissingError(ConfigError):
    """An object prefix that holds the app's objects and has lost its stamp object."""

    code = "prefix_stamp_missing"

    profile: str
    where: str
    found: Sequence[str]
    protected: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        self.found = tuple(self.found)
        super().__post_init__()

    @property
    def message(self) -> str:
        shown = ", ".join(self.found[:5]) + (", ..." if len(self.found) > 5 else "")
        confirm = _CONFIRM if self.protected else ""
        return (
            f"profile {self.profile!r}: object prefix {self.where} holds the app's objects "
            f"({shown}) but its stamp object .app-profile.json is gone (deleted by hand, by a "
            "lifecycle rule or a sync); refusing to open it, since nothing here says whose "
            "they are; nothing was changed. If it is this profile's prefix, stop every "
            f"replica and run `app data restamp --profile {self.profile} --from "
            f"{self.profile}{confirm}`: it writes the stamp back once the profile's database "
            "is found to name objects here. Otherwise point blob_url at a new or empty one"
        )


class PrefixEmptiedError(ConfigError):
    """An object prefix with no stamp and no objects, whose database's rows name objects
    there: the store lost them, or is another store than the one they were written to."""

    code = "prefix_emptied"

    profile: str
    where: str
    database: str
    named: Sequence[str]
    protected: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        self.named = tuple(self.named)
        super().__post_init__()

    @property
    def message(self) -> str:
        shown = ", ".join(self.named[:3]) + (", ..." if len(self.named) > 3 else "")
        confirm = _CONFIRM if self.protected else ""
        return (
            f"profile {self.profile!r}: object prefix {self.where} is empty, its stamp object "
            f".app-profile.json gone with everything else, but database {self.database}, "
            f"bound to it, has rows naming objects there ({shown}): the object store lost "
            "them, or is not the store they were written to (a volume not mounted, a new or "
            "emptied bucket, s3_endpoint_url or its host name now naming another store). "
            "Refusing to open it: every file would be missing, and what a replica uploaded "
            "into it would be lost once the right store is back; nothing was changed. Check "
            "s3_endpoint_url and blob_url (`app config`), and bring the store's data back "
            "(its volume, a bucket version, a backup); `app data check` then finds every "
            "object. If they are lost for good, stop every replica and run `app data restamp "
            f"--profile {self.profile} --from {self.profile}{confirm}`, which stamps the empty "
            "prefix; `app data check` then lists each file whose object is missing"
        )


class PrefixStampDamagedError(ConfigError):
    """An object prefix's stamp object is there but says no profile (not JSON, not an
    object, no ``profile``)."""

    code = "prefix_stamp_damaged"

    where: str
    problem: str

    @property
    def message(self) -> str:
        return (
            f"object prefix {self.where}: its stamp object .app-profile.json {self.problem}; "
            "refusing to open it, since nothing else here says whose it is; nothing was "
            "changed. Bring back the stamp's earlier version (a bucket version or a backup), "
            'or write it as a JSON object naming the profile, {"profile": "<profile>"}, '
            "with the object store's own tools"
        )


class DatabaseStampMissingError(ConfigError):
    """A database with the app's tables whose stamp row (in ``app_stamp``) is gone."""

    code = "database_stamp_missing"

    profile: str
    where: str
    schema_version: int

    @property
    def message(self) -> str:
        # The remedy quotes SQL for the operator to run; nothing here executes it.
        return (
            f"profile {self.profile!r}: database {self.where} has the app's tables, but its "  # noqa: S608
            "stamp row in app_stamp is gone (deleted by hand); refusing to open it, since "
            "nothing else in it says whose it is; nothing was changed. If it is this "
            "profile's database, put the row back, with no replica running: `INSERT INTO "
            f"app_stamp (profile, schema_version) VALUES ('{self.profile}', "
            f"{self.schema_version})`. Otherwise point database_url at a new or empty one"
        )


class DatabaseEncodingError(ConfigError):
    """The database, or the connection to it, does not carry text as UTF-8."""

    code = "database_encoding"

    where: str
    server_encoding: str
    client_encoding: str

    @property
    def message(self) -> str:
        if self.server_encoding != "UTF8":
            return (
                f"database {self.where} stores text as {self.server_encoding}, not UTF8: file "
                "names, titles and metadata are Unicode, and in this database some cannot be "
                "stored (an emoji in LATIN1) or are not read back as text (SQL_ASCII); "
                "refusing to use it, nothing was changed. Create a database with ENCODING "
                "'UTF8' (`CREATE DATABASE <name> ENCODING 'UTF8' TEMPLATE template0`), move "
                "any rows into it (pg_dump, then pg_restore), and point database_url at it"
            )
        return (
            f"connections to database {self.where} use client_encoding "
            f"{self.client_encoding}, not UTF8: file names, titles and metadata are Unicode, "
            "and some would not reach the database or come back; refusing to use it, "
            "nothing was changed. Remove client_encoding from database_url (or its "
            "options): the app asks for UTF8 itself"
        )


#: What resolves a transaction pooler (:class:`TransactionPoolerError`, and a replica's loss).
POOLER_REMEDY = (
    "Point database_url at PostgreSQL itself, or at a pooler in session mode (PgBouncer: "
    "pool_mode = session for this database)"
)


class TransactionPoolerError(ConfigError):
    """``database_url`` reaches PostgreSQL through a pooler in transaction mode: a server
    session outlives the client's, so the app's session-level advisory locks (a replica's
    hold, maintenance's) are handed to whichever client gets that server connection next."""

    code = "transaction_pooler"

    where: str
    wanted: str
    """What was refused ("serving", "the hold to empty the trash")."""
    detail: str
    """What gave the pooler away."""

    @property
    def message(self) -> str:
        return (
            f"database {self.where} is reached through a connection pooler in transaction "
            f"mode: {self.detail}. The app holds the database with session-level advisory "
            "locks, which such a pooler leaves on the server connection for the next client "
            "(a replica would start during maintenance, or maintenance during a replica); "
            f"refusing {self.wanted}, nothing was changed. {POOLER_REMEDY}"
        )


class SchemaTooNewError(ConfigError):
    """The database was stamped by a newer release of the app."""

    code = "schema_too_new"
    template = (
        "{what} has schema version {found}, this release of the app knows up to {known}; "
        "nothing was changed. Upgrade the app (every replica) to the release that wrote it"
    )

    what: str
    found: int
    known: int


class DatabaseUnavailableError(AppError):
    """The database server cannot be reached or refused the connection."""

    exit_code = EX_UNAVAILABLE
    code = "database_unavailable"
    http_status = 503
    template = (
        "cannot connect to database {where}: {reason}. Check that the server runs and "
        "that database_url (APP_DATABASE_URL) names it; `app doctor` checks the settings"
        "{environment}"
    )

    where: str
    reason: str
    environment: str = field(default="", kw_only=True)
    """What libpq takes from this process's environment besides the URL
    (:func:`app.remote.pg.libpq_environment`), as a sentence, or ``""``."""


class DatabaseRefusedError(DatabaseUnavailableError):
    """The database server was reached and refused a statement: read-only, out of disk, a
    timeout, a conflict (:func:`app.remote.pg.refusals` reads its SQLSTATE)."""

    code = "database_refused"
    template = (
        "database {where} refused {what}: {reason} (SQLSTATE {sqlstate}); nothing was "
        "changed. {remedy}"
    )

    sqlstate: str
    remedy: str
    what: str = "a statement"


class DatabasePasswordMissingError(DatabaseRefusedError):
    """The database server asks for a password (its pg_hba.conf line for this host says
    ``password``, ``md5`` or ``scram-sha-256``) and libpq had none to send: libpq's own
    refusal, "fe_sendauth: no password supplied", with no SQLSTATE. Was "cannot connect ...
    Check that the server runs", which it did (red team 75 on this session's leftovers)."""

    code = "database_password_missing"
    template = (
        "database {where} refused {what}: it asks for a password and none was given "
        "({reason}); nothing was changed. {remedy}"
    )


class ObjectStoreUnavailableError(AppError):
    """The object store cannot be reached, or refused the credentials or the bucket."""

    exit_code = EX_UNAVAILABLE
    code = "object_store_unavailable"
    http_status = 503
    template = "cannot use object store {where}: {reason}. {remedy}"

    where: str
    reason: str
    #: Where the credentials come from (`app.remote.objects.ObjectStore.credentials`).
    credentials: str = field(default=STATIC_CREDENTIALS, kw_only=True)
    #: What resolves it, where that is not the settings: a store that answered with a server
    #: error, or not at all in time, runs and is reached (red team 51: "Check s3_endpoint_url,
    #: blob_url and the credentials" of a store answering 500 to every attempt).
    remedy: str = field(default="", kw_only=True)

    def __post_init__(self) -> None:
        self.remedy = self.remedy or self._settings_remedy()
        super().__post_init__()

    def _settings_remedy(self) -> str:
        return (
            f"Check s3_endpoint_url, blob_url and the credentials {self.credentials}; "
            "`app doctor` checks them"
        )

    @property
    def store_failing(self) -> bool:
        """Whether the store answered with a server error, or not in time: it runs and the
        settings reach it, so no setting is to blame (the remedy says what to do)."""
        return self.remedy != self._settings_remedy()


class ObjectStoreCutShortError(AppError):
    """A maintenance command stopped part-way: the object store refused one of its requests
    after the command had changed something (`app data check --repair`'s deletions, `app
    data restamp`'s database).

    Each was the refusal of that request alone, ``object_store_unavailable`` with "check
    s3_endpoint_url, blob_url and the credentials" (which a store that answers 5xx does not
    need), saying nothing of what was already done nor how to finish it; the repair's audit
    row marked every finding not repaired, the objects it had deleted among them (red team
    51).
    """

    exit_code = EX_UNAVAILABLE
    code = "object_store_cut_short"
    http_status = 503
    template = (
        "`{command}` was cut short: object store {where} refused {refused} ({reason}). "
        "{done}; it left {left}. {recorded}. Run `{command}` again once the object store "
        "answers (`app doctor` checks it): {again}"
    )

    command: str
    where: str
    #: What the object store refused, and its answer.
    refused: str
    reason: str
    #: What the command had done by then, what it left, where that is recorded, and what
    #: running it again does: sentences.
    done: str
    left: str
    recorded: str
    again: str


class TrashEmptiedCutShortError(AppError):
    """``app data empty-trash`` stopped part-way on a remote profile: the trash's rows were
    deleted (and audited) for good, then the object store or the database refused a request
    of the deletion of their objects.

    It was refused as ``app data check --repair`` cut short, "every row of the database as
    it was", or as a store that cannot be used at all (or a read that "changes nothing"), of
    a command that had removed every entry it was asked to, said nowhere (red team 52); an
    operator who took either at its word ran the empty-trash again, or looked for the
    entries it had removed.
    """

    exit_code = EX_UNAVAILABLE
    code = "object_store_cut_short"
    http_status = 503
    template = (
        "`app data empty-trash` was cut short: {refusal}. By then it had removed {removed} "
        "for good (deleted from the database; the empty-trash row of its audit log names "
        "them){done}; it left {left} in the object store. Run `app data check --repair` once "
        "the {answering} answers (`app doctor` checks it): it deletes the objects no row "
        "names, and removes no trash entry"
    )

    #: Who refused what, and why ("object store ... refused the deletion of ... (...)").
    refusal: str
    #: How many trash entries were removed ("3 trash entries").
    removed: str
    #: What the deletion of objects did by then (", and it had deleted ..."), or nothing.
    done: str
    #: The objects it left, which no row names.
    left: str
    #: What must answer again: "object store" or "database".
    answering: str


class S3ClientSettingsError(ConfigError):
    """The S3 client refused a setting it reads itself, outside the app's configuration (an
    ``AWS_*`` variable of the process's environment, the AWS config file)."""

    code = "s3_client_settings"
    template = (
        "cannot make the S3 client for object store {where}: {reason}. The S3 client (boto3) "
        "reads this from the process's environment (AWS_* variables) or from the AWS config "
        "file (AWS_CONFIG_FILE, else ~/.aws/config; its AWS_PROFILE section): correct or "
        "unset it there; nothing was changed"
    )

    where: str
    reason: str


class S3EndpointElsewhereError(ConfigError):
    """A profile that sets no ``s3_endpoint_url`` (AWS's) whose S3 client sends its requests
    elsewhere, to an endpoint it reads itself (``AWS_ENDPOINT_URL``, the AWS config file)."""

    code = "s3_endpoint_elsewhere"
    template = (
        "cannot use object store {where}: s3_endpoint_url is unset, which names AWS's endpoint "
        "to the app and to the check that no two profiles share a prefix, but the S3 client "
        "(boto3) would send every request to {reached}, an endpoint it reads itself ({source}), "
        "where the check never looked. Refusing to use it; nothing was changed. If that store "
        "is the one meant, set s3_endpoint_url to {reached} (the check then compares the "
        "profiles where they are); otherwise {remedy}"
    )

    where: str
    reached: str
    source: str
    remedy: str


class StoreClockSkewError(ObjectStoreUnavailableError):
    """The object store refused a request as signed at a time too far from its own clock:
    this machine's clock, or the store's, is wrong (S3 allows 15 minutes)."""

    code = "object_store_clock_skew"
    template = (
        "cannot use object store {where}: it refused the request as signed at a time too "
        "far from its own clock ({reason}): this machine's clock says {here}, the store's "
        "says {there}. The credentials and the settings may be right: set the wrong clock "
        "right (NTP: `timedatectl status` and `chronyc tracking` show whether it is kept), "
        "then retry; nothing was changed"
    )

    here: str
    there: str


class ObjectMissingError(StorageError):
    """A row names an object that the object store does not have."""

    code = "object_missing"
    template = (
        "object {where} is recorded but missing from the object store; nothing was "
        "changed. `app data check` lists such rows and objects"
    )

    where: str


class FileRowOfAnotherShapeError(StoreError):
    """A file's row in ``app_files`` of another shape than the app writes (a SHA-256 in
    capitals or no hex, a size that is negative), written by a tool or an edit (red team
    60): its download was a 500 ``internal_error`` or cut before its last byte, the bytes
    themselves sound. A read of that name is refused, naming what is not the app's; the
    row is left out of its session's files and `app data check` names it and its object.
    A ``PUT`` or ``DELETE`` of the name works as for any file: the row moves to the trash
    with its object, as a replaced or deleted file's does."""

    code = "file_record_unreadable"
    http_status = 500
    # No object name, no SQL: the message reaches HTTP clients; `app data check` names both.
    template = (
        "cannot {action} file {name!r} of session {session_id}: its row in the database is of "
        "another shape than the app writes ({fault}; a tool or an edit wrote it), so the app "
        "cannot tell which bytes were acknowledged, and {outcome}. `app data check` "
        "reports the row ({finding}) with its object's size and SHA-256: correct the row with "
        "every replica stopped, or upload the file again (PUT /sessions/{session_id}/files/"
        "{name}), which keeps the row and its object in the trash"
    )

    session_id: str
    name: str
    fault: str
    action: str = "send"
    outcome: str = "nothing was sent"
    finding: str = "row-of-another-shape"


class TrashedSessionRowOfAnotherShapeError(UnreadableSessionError):
    """The restore of a session from the trash whose row a tool rewrote meanwhile (its
    ``metadata`` not an object: red team 61). The restore made the row live and audited it,
    then failed to read it back, leaving a live session every read refused; it is now
    refused before anything changes, as a file's restore of a row of another shape is."""

    # No SQL: the message reaches an operator's terminal; the check names the row.
    template = (
        "cannot restore session {session_id}: its {file} {damage} (it was changed outside "
        "the app), and nothing was changed: the session stays in the trash. `app data "
        "check` reports it as {finding}. Give the row its metadata back from a backup (or "
        "'{{}}') with every replica stopped, then restore it again; or let `app data "
        "empty-trash` remove it with the rest of the trash"
    )


class ReplicasLiveError(AppError):
    """Destructive maintenance while replicas hold the database (or another maintenance)."""

    exit_code = EX_TEMPFAIL
    code = "replicas_live"
    http_status = 409

    wanted: str
    where: str
    replicas: Sequence[Mapping[str, Any]]
    others: str = ""
    writing: str = ""
    """Who holds it shared without a live row: a write whose replica has just stopped."""
    prepared: str = ""
    """The prepared transactions that hold it (`app.remote.pg.prepared_holders`), named with
    what ends them: no process holds one, and none ends on its own (red team 71 on the
    remote backend)."""

    def __post_init__(self) -> None:
        self.replicas = tuple(dict(replica) for replica in self.replicas)
        super().__post_init__()

    @property
    def message(self) -> str:
        if self.replicas:
            named = "; ".join(describe_replica(replica) for replica in self.replicas)
            stopping = all(replica.get("stopping_since") for replica in self.replicas)
            # A stopping replica that is paused exits only once resumed: "wait" was for ever.
            paused = stopping and any(_paused_here(replica) for replica in self.replicas)
            stop = (
                "resume the paused one(s) as said, wait for them to exit, then retry"
                if paused
                else "wait for them to exit, then retry"
                if stopping
                else "stop every one of them (on its own machine), then retry"
            )
            held = f"{len(self.replicas)} live replica(s) hold it: {named}"
        elif self.writing:
            held = f"a write of a replica that has stopped is still committing ({self.writing})"
            stop = "retry in a moment"
        elif self.prepared:
            held = f"it is held by a {self.prepared}"
            stop = "nothing ends it on its own: end it as said, then retry"
        else:
            by = self.others or "another connection that published no details"
            held = f"it is held by {by}"
            stop = "wait for that maintenance command to finish, then retry"
        return (
            f"cannot {self.wanted}: database {self.where} is in use; {held}. Nothing was "
            f"changed; {stop}. `app status` lists the live replicas"
        )


class MaintenanceRunningError(AppError):
    """A replica cannot start while maintenance holds the database exclusively."""

    exit_code = EX_TEMPFAIL
    code = "maintenance_running"
    http_status = 503
    template = (
        "cannot serve database {where}: a maintenance command holds it exclusively "
        "({holder}). Wait for it to finish, then start the server again"
    )

    where: str
    holder: str
    prepared: bool = field(default=False, kw_only=True)
    """``holder`` names prepared transactions (`app.remote.pg.prepared_holders`), not a
    command: nothing finishes it (red team 71 on the remote backend)."""

    @property
    def message(self) -> str:
        if not self.prepared:
            return super().message
        return (
            f"cannot serve database {self.where}: a {self.holder} holds it exclusively, as a "
            "maintenance command would; nothing ends it on its own: end it as said, then "
            "start the server again"
        )


class HolderLostError(AppError):
    """A replica's connection (and with it its shared lock) is gone; writes are refused."""

    exit_code = EX_SOFTWARE
    code = "holder_lost"
    http_status = 503
    template = (
        "lost the connection that holds database {where} ({reason}); maintenance could "
        "now take it, so this server refuses every write and stops. Restart the server "
        "once the database is reachable"
    )

    where: str
    reason: str
    handed_away: bool = field(default=False, kw_only=True)
    """The connection is there, but the object prefix now belongs to another database (a
    copy adopted, a promoted standby), or lost its stamp: ``reason`` says which."""
    remedy: str | None = field(default=None, kw_only=True)
    """What lets it restart, where that is not another database_url."""
    said: str | None = field(default=None, kw_only=True)
    """With `handed_away`: what happened, as the HTTP answer says it (no database's or
    store's address)."""

    @property
    def message(self) -> str:
        if not self.handed_away:
            return super().message
        return (
            f"{self.reason}; so this server, on database {self.where}, refuses every write "
            "and stops. "
            + (
                self.remedy
                or "Its restart is refused until database_url names the database the prefix "
                "belongs to now (`app doctor` on this server says which, and what to do)"
            )
        )

    def to_dict(self) -> dict[str, Any]:
        """Over HTTP: the refusal without the database's address.

        One whose prefix was handed away said that the server "lost its connection to the
        database" and to retry once it is restarted, a restart that is refused (red team 70
        on regress, the latest merges): it says what happened now, as a local server's
        ``stamp_changed`` does.
        """
        if self.handed_away:
            return {
                "code": self.code,
                "message": (
                    f"{self.said or 'the database this server holds is no longer its own'} "
                    "while this server ran, so it refuses every write and is stopping; nothing "
                    "was written. "
                    + (
                        self.remedy
                        or "Its restart is refused until database_url names the database the "
                        "prefix belongs to now (`app doctor` on the server says which)"
                    )
                ),
            }
        return {
            "code": self.code,
            "message": (
                "this server lost its connection to the database, so it refuses every write and "
                "is stopping; nothing was written. Retry once the server is restarted"
            ),
        }


class HolderUnwatchedError(HolderLostError):
    """A replica's watch of its hold failed with an error of its own: it stops.

    The thread that looks every ``lock_check_seconds`` at the replica's hold and at its
    object prefix's stamp ended silently on any exception, and the replica served on
    unwatched (as the local lock's watcher, red team 73's; leftovers74): it stops instead.
    """

    code = "holder_unwatched"
    template = (
        "this server's watch of its hold on database {where} {reason}: the hold need not "
        "be gone, but this process no longer looks at whether it still holds the database "
        "and its object prefix, so it stops rather than serve unwatched. The server's log "
        "holds the watcher's traceback: report it (a fault of the app's), then restart the "
        "server (`app serve`)"
    )

    def to_dict(self) -> dict[str, Any]:
        """Over HTTP: the same refusal without the database's address or the exception."""
        return {
            "code": self.code,
            "message": (
                "this server's watch of its hold on the database failed, so it refuses every "
                "write and is stopping rather than serve unwatched; nothing was written. "
                "Retry once the server is restarted"
            ),
        }


class CommitUnknownError(DatabaseUnavailableError):
    """A change lost its connection while committing, and whether it was saved is unknown.

    Raised only when the database cannot tell afterwards (it does not answer, or the
    transaction is still in progress in a backend that is stopped): when it can, the change
    is answered as the database decided (``pg_xact_status``).
    """

    code = "commit_outcome_unknown"
    template = (
        "lost the connection to database {where} while committing {what} ({reason}), and "
        "could not learn the outcome from it: whether it was saved is unknown. "
        "Its bytes, if any, were kept. Once the database answers, read it back before "
        "retrying (a retry of a create may make a second one); `app data check` lists an "
        "upload's object that no row names, and --repair deletes it"
    )

    what: str


class DatabaseTimeoutError(DatabaseUnavailableError):
    """The database did not answer within ``database_wait_seconds``: a server that is hung
    rather than gone (stopped, frozen, overloaded, or a network that drops its packets),
    which no TCP timeout notices (red team 28). The connection was closed."""

    code = "database_timeout"
    template = (
        "database {where} did not answer {what} within {seconds:g} s ({reason}): it may be "
        "stopped or frozen (a process stopped with SIGSTOP, a host paused), overloaded, or "
        "the network to it may drop packets. The connection was closed before anything "
        "committed, so the database rolls back whatever of it began: nothing was changed. "
        "Retry once it answers (`app doctor` checks that it does; `GET /ready` says whether "
        "this server reaches it); if it is only slow, raise database_wait_seconds "
        "(APP_DATABASE_WAIT_SECONDS)"
    )

    seconds: float
    what: str = "a statement"


class DatabaseBusyError(DatabaseUnavailableError):
    """Every connection of this process's pool stayed in use for the pool's whole wait: the
    database answers, but this process's requests hold them all (red team 27)."""

    code = "database_busy"
    template = (
        "no connection to database {where} came free within {seconds:g} s "
        "(database_wait_seconds): all {size} of this "
        "process's pool are held by requests still running ({reason}), so {what} was not "
        "begun and nothing was changed. Retry; `SELECT pid, state, wait_event, query FROM "
        "pg_stat_activity WHERE datname = current_database()` shows what they wait for (a "
        "lock another client holds: database_lock_wait_seconds bounds that wait)"
    )

    seconds: float
    size: int
    what: str = "the request"


class ConnectionLostError(DatabaseUnavailableError):
    """A change lost its connection before it committed (its backend ended by
    ``pg_terminate_backend``, a restart, a failover): rolled back, so nothing was changed."""

    code = "connection_lost"
    template = (
        "lost the connection to database {where} during {what} ({reason}), before it "
        "committed: the database rolled it back, so it was not saved and nothing was changed; "
        "retry it (if the database does not answer, check that the server runs)"
    )

    what: str


class StatementConnectionLostError(DatabaseUnavailableError):
    """A connection the server had answered on ended under a statement outside any change
    (a read; its backend ended by ``pg_terminate_backend``, a restart, a failover).

    It was "cannot connect to database ...: check that the server runs and that
    database_url names it", of settings that had reached it (red team 52: `app data check
    --repair` whose first read an operator's ``pg_terminate_backend`` ended).
    """

    code = "connection_lost"
    template = (
        "lost the connection to database {where} during {what} ({reason}): the server "
        "ended it after it had answered on it (an operator's pg_terminate_backend, a "
        "restart, a failover), so database_url reaches it and nothing in the settings needs "
        "to change; {outcome}. Retry it (if the database does not answer, check that the "
        "server runs)"
    )

    what: str
    #: What the statement had done: a read changes nothing.
    outcome: str = "a read changes nothing, so nothing was changed"


class DatabaseCopiedError(ConfigError):
    """A database whose rows were copied from the one its object prefix belongs to (a
    restore of a dump, ``CREATE DATABASE ... TEMPLATE``): same id, another database."""

    code = "database_copied"

    profile: str
    database: str
    objects: str
    bound: str
    """The database the prefix's stamp records (cluster system identifier/database oid)."""
    here: str
    """This one, in the same form."""
    protected: bool = field(default=False, kw_only=True)

    @property
    def message(self) -> str:
        confirm = _CONFIRM if self.protected else ""
        return (
            f"profile {self.profile!r}: database {self.database} carries the id of the "
            f"database object prefix {self.objects} belongs to, but is not that database: "
            f"the prefix's stamp records database {self.bound} (cluster system "
            f"identifier/database oid) and this is {self.here}, so one is a copy of the "
            "other (a restored dump, a CREATE DATABASE ... TEMPLATE). Each database's rows "
            "name only the objects written through it, so this one's `app data check "
            "--repair` would delete the files acknowledged by the other since the copy, and "
            "its uploads would be deleted by the other's. Refusing to open it; nothing was "
            "changed. If this database now replaces the other (a restore, a move to another "
            "server, a major-version upgrade), stop every replica of the other and run `app "
            f"data restamp --profile {self.profile} --from {self.profile}{confirm}` with "
            "this database_url: the prefix is then this database's, and the other is "
            "refused. Otherwise point database_url back at the one the replicas use (`app "
            "config` shows where it came from)"
        )


class SchemaNotWritableError(ConfigError):
    """The app's role may not create its tables in the schema of a new database."""

    code = "schema_not_writable"

    profile: str
    where: str
    schema: str
    role: str
    dbname: str

    @property
    def message(self) -> str:
        return (
            f"profile {self.profile!r}: database {self.where} has no tables of the app yet, "
            f"and role {self.role!r} may not create them in schema {self.schema!r} "
            "(PostgreSQL 15 and later no longer let every role create in public; only the "
            "database's owner may), so its first open cannot stamp it. Refusing to open it; "
            f"nothing was changed. As a superuser or the database's owner, run `ALTER "
            f'DATABASE "{self.dbname}" OWNER TO "{self.role}"` (the owner may create in '
            f'public), or `GRANT CREATE ON SCHEMA "{self.schema}" TO "{self.role}"`'
        )


class UnloggedTablesError(ConfigError):
    """Tables (or sequences) of the app's that PostgreSQL does not log: a crash empties them."""

    code = "tables_unlogged"

    profile: str
    where: str
    #: The app's tables that are UNLOGGED, a table another references first.
    tables: tuple[str, ...]
    #: Its UNLOGGED sequences whose table is logged (``ALTER SEQUENCE ... SET UNLOGGED``).
    sequences: tuple[str, ...] = ()
    #: Whether the stamp row is gone too, as a restart after a crash leaves such a table.
    emptied: bool = False

    @property
    def message(self) -> str:
        named, statements = _unlogged_words(self.tables, self.sequences)
        gone = (
            " Its stamp row in app_stamp is gone, as such a restart leaves an UNLOGGED table: "
            "the server has restarted after a crash since, and the rows of those tables are "
            "lost; restore them from a backup taken before (pg_dump keeps an UNLOGGED table's "
            "rows), then make them logged as below."
            if self.emptied
            else ""
        )
        return (
            f"profile {self.profile!r}: database {self.where} has the app's "
            f"{named} UNLOGGED (`ALTER ... SET UNLOGGED`, as a bulk load or a "
            "restore is sped up): PostgreSQL writes none of their changes to its WAL, so it "
            "empties them as it starts again after a crash, and a standby or a restore of a "
            "base backup has none of their rows: every session, file or audit row the app "
            "acknowledged there would be lost. Refusing to open it; nothing was changed."
            f"{gone} As their owner, run `{statements}` (in this order: a table "
            "another references first; each rewrites its table under an exclusive lock)"
        )


def _unlogged_words(tables: tuple[str, ...], sequences: tuple[str, ...]) -> tuple[str, str]:
    """The app's UNLOGGED tables and sequences in words, and the statements that log them
    again, in the order given (a table another references first)."""
    named = [
        f"{kind}{'s' if len(names) > 1 else ''} {', '.join(names)}"
        for kind, names in (("table", tables), ("sequence", sequences))
        if names
    ]
    statements = [f'ALTER TABLE "{t}" SET LOGGED' for t in tables] + [
        f'ALTER SEQUENCE "{s}" SET LOGGED' for s in sequences
    ]
    return " and ".join(named), "; ".join(statements)


class UnloggedWriteError(AppError):
    """A change refused at its commit point: a table (or sequence) of the app's it would
    write was made UNLOGGED since the store opened the database, which refuses that."""

    exit_code = EX_UNAVAILABLE
    code = "write_unlogged"
    http_status = 503

    where: str
    what: str
    #: The app's tables that are UNLOGGED, a table another references first.
    tables: tuple[str, ...]
    #: Its UNLOGGED sequences whose table is logged.
    sequences: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        named, statements = _unlogged_words(self.tables, self.sequences)
        return (
            f"database {self.where} did not store {self.what}: the app's {named} "
            "became UNLOGGED since this process opened the database (`ALTER ... SET "
            "UNLOGGED`, as a bulk load or a restore is sped up): PostgreSQL writes none of "
            "their changes to its WAL and empties them as it starts again after a crash, so "
            "a change acknowledged there would be lost. Refusing it; nothing was changed "
            "(its transaction was rolled back, and an upload's object deleted). The rows "
            "already there are lost as well if the server crashes before they are logged "
            f"again: as their owner, run `{statements}` now (in this order: a table another "
            "references first; each rewrites its table under an exclusive lock), then retry"
        )


class _TablesAmissError(ConfigError):
    """What a check of the app's tables at the open found amiss (:func:`app.remote.pg.hooks`,
    :func:`app.remote.pg.drift`), each with the statement that undoes it."""

    profile: str
    where: str
    #: Each thing found, in words or as PostgreSQL defines it.
    found: tuple[str, ...]
    #: What undoes each, in the same order.
    statements: tuple[str, ...]


class TablesHookedError(_TablesAmissError):
    """Triggers or rules on the app's tables that the app did not make (one that can skip or
    change its writes), row level security its role is subject to, or the app's own triggers
    switched off."""

    # Each of `found` as PostgreSQL defines it (``pg_get_triggerdef``, ``pg_get_ruledef``),
    # or the app's trigger that is off.
    code = "tables_hooked"

    @property
    def message(self) -> str:
        found = "; ".join(self.found)
        undo = "; ".join(self.statements)
        return (
            f"profile {self.profile!r}: database {self.where} has, on the app's tables, what "
            f"the app did not put there or switched off: {found}. A trigger run BEFORE or "
            "INSTEAD OF each row's change, or a rule, can skip, change or send elsewhere the "
            "app's writes (one that returns NULL skipped an upload's row while the upload was "
            "answered 201 and its bytes were deleted), row level security hides rows from "
            "the app's reads (a repair took the objects of the files it hid for orphans and "
            "deleted them), and the app's own triggers keep the "
            "count of live sessions and the audit append-only. Refusing to open it; nothing "
            f"was changed. As the tables' owner, run `{undo}` (what such a trigger did belongs "
            "in a table of its own, fed by an AFTER trigger, which the app leaves alone); "
            "where a trigger of the app's was off, `app data check --repair` (every replica "
            "stopped) counts the live sessions again"
        )


class TablesChangedError(_TablesAmissError):
    """The app's tables are not as the app made them: a column dropped or of another type,
    collation or ``NOT NULL``, a constraint or a unique index added, dropped or changed, or
    a unique index of the app's ``INVALID`` (red team 63)."""

    # Each of `found` a difference in words (:func:`app.remote.pg.drift`).
    code = "tables_changed"

    @property
    def message(self) -> str:
        found = "; ".join(self.found)
        undo = "; ".join(self.statements)
        return (
            f"profile {self.profile!r}: database {self.where} has the app's tables "
            f"changed from the ones the app made: {found}. The app's statements rely on "
            "each column's type, on its constraints and unique indexes and on its "
            "sequences: another type stores a row otherwise than the app answered (jsonb "
            "reorders a session's metadata), and a constraint or column of another's, or a "
            "sequence behind, refuses the app's writes halfway. Refusing to open it; nothing "
            f"was changed. As the tables' owner, run `{undo}`; what such a change was for "
            "belongs in a table or view of its own"
        )


class WriteNotStoredError(AppError):
    """An INSERT or UPDATE of the app's wrote no row: a trigger or rule of another's skipped
    it; or an upload's row was not there as sent once every trigger had run (or a restore's
    not out of the trash, or a row a replace or a delete moved to the trash not there)."""

    exit_code = EX_UNAVAILABLE
    code = "write_not_stored"
    http_status = 503

    where: str
    what: str
    table: str
    statement: str = "INSERT into"
    #: Whether a row was written, but not the one sent, or deleted after (by a trigger).
    after: bool = False
    #: A session's move to the trash whose file rows a trigger took away: how many it had
    #: before the update, and how many once every trigger had run (red team 69).
    files: tuple[int, int] | None = None

    @property
    def message(self) -> str:
        said = f"database {self.where} did not store {self.what}: its {self.statement} {self.table}"
        # The query that lists the table's triggers, which each `after` form names.
        triggers = (
            "`SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = "  # noqa: S608
            f"'{self.table}'::regclass AND NOT tgisinternal` lists the triggers on that table"
        )
        if self.files is not None:
            before, after = self.files
            return (
                f"{said} moved the session to the trash with {before} file row(s), but once every "
                f"trigger had run {after} were there, as a trigger of another's after the change "
                "that moves or deletes a trashed session's files (at once, or deferred to the "
                "commit: an archiving tool's) makes it; nothing was changed (its transaction was "
                f"rolled back). {triggers}: drop the one that changes its rows (`DROP TRIGGER "
                f"<name> ON {self.table}`), then retry"
            )
        if self.after and self.statement == "UPDATE of":
            # A restore's: the row it took out of the trash (red team 68 on regress); a
            # replace's, a delete's or a repair's, a row it moved to the trash or keyed (red
            # team 69 on integrity).
            return (
                f"{said} changed a row, but once every trigger had run that row was not as the "
                "change left it (gone, or back as it was), as a trigger of another's that updates "
                "or deletes it after the change (at once, or deferred to the commit: an archiving "
                "tool's that moves a trashed row elsewhere) makes it; nothing was changed (its "
                f"transaction was rolled back). {triggers}: drop the one that changes its rows "
                f"(`DROP TRIGGER <name> ON {self.table}`), then retry"
            )
        if self.after and self.table == "app_sessions":
            return (
                f"{said} wrote a row, but once every trigger had run that row was gone or not as "
                "sent (its title or its metadata, kept as sent), as a column of another type than "
                "the app's (metadata retyped jsonb reorders its keys) or a trigger of another's "
                "that changes a row before it is stored, or deletes or updates it after, makes "
                "it; nothing was changed (its transaction was rolled back). `app doctor` names a "
                f"column changed from the app's, and {triggers}: undo the change, or drop the "
                "trigger that changes its rows, then retry"
            )
        if self.after:
            return (
                f"{said} wrote a row, but once every trigger had run that row was gone or not as "
                "sent (its object, size or digest), as a trigger of another's that changes a row "
                "before it is stored, or deletes or updates it after, makes it; nothing was "
                "changed (its transaction was rolled back, and the upload's object deleted). "
                f"{triggers}: drop the one that changes its rows (`DROP TRIGGER <name> ON "
                f"{self.table}`), then retry"
            )
        return (
            f"{said} wrote no row, as a trigger that returns NULL before it or a rule DO INSTEAD "
            "on that table makes it; nothing was changed (its transaction was rolled back, and an "
            "upload's object deleted). `app doctor` names the triggers and rules on the app's "
            f"tables that the app did not make: drop them (`DROP TRIGGER <name> ON {self.table}`), "
            "then retry"
        )


class DatabaseTimelineBehindError(ConfigError):
    """The old primary of a database whose standby was promoted, still taking writes."""

    code = "database_timeline_behind"

    profile: str
    database: str
    objects: str
    timeline: int
    recorded: int

    @property
    def message(self) -> str:
        return (
            f"profile {self.profile!r}: database {self.database} is on timeline "
            f"{self.timeline}, but object prefix {self.objects}'s stamp records timeline "
            f"{self.recorded} of the same database: a standby of it was promoted (a failover, "
            "or a point-in-time recovery) and a replica has opened that one, while this "
            "primary still takes writes (a split brain). What this one's rows name the "
            "other's `app data check --repair` would delete, and the other way round. "
            "Refusing to open it; nothing was changed. Point database_url at the promoted "
            "server, and stop this one or rebuild it as a standby of the new primary "
            "(pg_rewind, or a new pg_basebackup)"
        )


class PrefixOfAnotherDatabaseError(ConfigError):
    """An object prefix stamped for another profile and bound to another database than the
    one this profile names: not this profile's to open, nor to re-stamp."""

    code = "prefix_of_another_database"

    profile: str
    objects: str
    owner: str
    """The profile its stamp names."""
    bound: str
    """The id of the database its stamp names."""
    database: str
    database_id: str

    @property
    def message(self) -> str:
        return (
            f"profile {self.profile!r}: object prefix {self.objects} belongs to profile "
            f"{self.owner!r} and to its database (id {self.bound}), and database "
            f"{self.database} (id {self.database_id}), which {self.profile!r} names, has no "
            "row naming its objects. Opened, or re-stamped for "
            f"{self.profile!r}, it would hold objects this database does not name (its `app "
            "data check --repair` would delete them all), and the replicas of "
            f"{self.owner!r} would be refused from their next start. Refusing; nothing was "
            f"changed. Point blob_url at a new or empty prefix for {self.profile!r} (`app "
            "config` shows where it came from)"
        )


class RestampBoundElsewhereError(ConfigError):
    """``app data restamp`` of a database whose rows name objects in another prefix than
    the profile's ``blob_url`` (a restored copy of another profile's database)."""

    code = "restamp_bound_elsewhere"

    profile: str
    from_profile: str
    database: str
    bound: str
    """The prefix the database is bound to (``s3://bucket/prefix``)."""
    objects: str
    """The profile's own prefix, as ``blob_url`` names it."""

    @property
    def message(self) -> str:
        return (
            f"cannot re-stamp database {self.database} from {self.from_profile!r} to "
            f"{self.profile!r}: its rows name their objects in {self.bound} (recorded on its "
            f"first open; a restored copy of {self.from_profile!r}'s database keeps it), not "
            f"in {self.objects}, which blob_url names for {self.profile!r}. Re-stamped, it "
            "would name objects this profile does not have, and the way out of that refusal "
            f"leads to {self.bound} itself, another database's prefix, where this one's `app "
            "data check --repair` would delete what the other acknowledges. Nothing was "
            "changed. A database's rows cannot be moved to another prefix: give "
            f"{self.profile!r} a new or empty database (its first open binds it to "
            f"{self.objects}), and copy sessions into it through the HTTP API "
            "(docs/how-to/run-on-postgresql.md, 'Moving from a data root')"
        )


class MaintenanceLostError(AppError):
    """A maintenance command lost the connection that held the database exclusively."""

    exit_code = EX_SOFTWARE
    code = "maintenance_lost"
    http_status = 503
    template = (
        "cannot {wanted}: lost the connection that holds database {where} exclusively "
        "({reason}), so a replica may have started since; nothing more was changed (what "
        "this command committed before is kept, and audited). Check `app status`, then "
        "run it again once no replica is live"
    )

    wanted: str
    where: str
    reason: str


class StorageMismatchError(ConfigError):
    """A profile's database and object prefix do not belong together."""

    code = "storage_mismatch"

    kind: str
    """``"prefix"``: the database keeps its bytes in another prefix; ``"database"``: the
    prefix belongs to another database."""
    database: str
    objects: str
    bound: str
    """What the other side recorded: the prefix the database is bound to, or the id of the
    database the prefix belongs to."""
    database_id: str = ""

    @property
    def message(self) -> str:
        if self.kind == "prefix":
            return (
                f"database {self.database} keeps its files' bytes in {self.bound} (recorded on "
                f"its first open), but blob_url names {self.objects}: its rows name objects "
                "under that prefix, so this process would find none of them, and would put new "
                "ones where the other replicas cannot read them. Every replica and command of "
                "a profile must name the same prefix: fix blob_url here (`app config` shows "
                "where it came from). Nothing was changed"
            )
        return (
            f"object prefix {self.objects} belongs to another database (its stamp object "
            f"names database id {self.bound}; database {self.database} has id "
            f"{self.database_id}): this database's rows name none of its objects, so its "
            "`app data check --repair` would delete them all. Every replica and command of a "
            "profile must name the same database: fix database_url here (`app config` shows "
            "where it came from). Nothing was changed"
        )
