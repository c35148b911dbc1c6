"""PostgreSQL primitives of the remote backend: connections, the stamp, live replicas.

The layers of the local data root, mapped onto one database (see the design's "Beyond one
machine"):

- **Stamp.** Table ``app_stamp`` holds one row: the profile and the schema version. The app's
  tables are created, with the stamp, in one transaction on the first open of an empty
  database; a database with other tables and no stamp is refused.
- **Live holders.** Every replica holds, on a connection of its own and for its whole life, a
  *shared* advisory lock on :data:`HOLDERS_LOCK`, and a row in ``app_holders`` saying who it
  is. The row is live only while its backend holds the row's own advisory lock
  (``ROW_LOCK_CLASS``, row id), as ``pg_locks`` shows: so a row left by a replica that was
  SIGKILLed, or whose connection dropped, stops counting the moment PostgreSQL closes the
  connection, and a backend pid reused by another connection cannot revive it.
- **Maintenance** takes :data:`HOLDERS_LOCK` *exclusively*, with a try: refused while any
  replica lives, naming each one.
- **Audit.** ``app_audit`` is append-only (a trigger refuses UPDATE, DELETE and TRUNCATE);
  callers append in the transaction of the change they record.

psycopg 3: the maintained PostgreSQL driver, typed, with binary wheels (``psycopg[binary]``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import logging
import os
import pwd
import re
import select
import socket
import stat
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Self

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

from app import sandbox
from app.errors import AppError
from app.remote.errors import (
    POOLER_REMEDY,
    CommitUnknownError,
    DatabaseEncodingError,
    DatabasePasswordMissingError,
    DatabaseRefusedError,
    DatabaseStampMissingError,
    DatabaseTimeoutError,
    DatabaseUnavailableError,
    HolderLostError,
    MaintenanceLostError,
    MaintenanceRunningError,
    Protection,
    RemoteStampMismatchError,
    ReplicasLiveError,
    SchemaNotWritableError,
    SchemaTooNewError,
    StorageMismatchError,
    TablesChangedError,
    TablesHookedError,
    TablesOffSearchPathError,
    TablesShadowedError,
    TransactionPoolerError,
    UnloggedTablesError,
    UnstampedNotEmptyError,
    WriteNotStoredError,
    from_pgoptions,
    needs_confirmation,
)
from app.remote.hosts import is_this_machine
from app.requester import REQUESTER

log = logging.getLogger("app.remote.store")

#: The schema this release writes and reads; a release refuses a database stamped later
#: (`SchemaTooNewError`). 2: a database marked ``content_sha256_since`` (every row keyed),
#: with the mark: a release from before it writes rows without keys (an upload's file row,
#: a session's ``updated_at`` without ``updated_sha256``), which the mark makes damage, so
#: it must not serve beside it (red team 67 on regress: a session such a replica uploaded to
#: was refused whole, and its file). A database not marked stays 1, open to them.
SCHEMA_VERSION = 2

# Advisory locks in the two-int4 form, so they cannot collide with another application's
# single-bigint keys; the class is derived from the app's name.
LOCK_CLASS = zlib.crc32(b"app") & 0x7FFFFFFF
HOLDERS_LOCK = (LOCK_CLASS, 1)
SCHEMA_LOCK = (LOCK_CLASS, 2)  # serialises two first opens of an empty database
CREATE_LOCK = (LOCK_CLASS, 3)  # pages wait for the creates under way (app.remote.sessions)
ROW_LOCK_CLASS = zlib.crc32(b"app:holder-row") & 0x7FFFFFFF

# Half-open connections (a partitioned network) must end in bounded time, or a dead replica
# would hold its lock: libpq's TCP keepalives and user timeout, unless the URL sets them.
_CONNECT_DEFAULTS = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
    "connect_timeout": "10",
    # Text is Unicode both ways, whatever PGCLIENTENCODING says (see check_encoding).
    "client_encoding": "UTF8",
}
_NAME_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1

_SCHEMA = """
CREATE TABLE app_stamp (
    id integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    profile text NOT NULL,
    schema_version integer NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    restamped_from text,
    -- Since when every session's row keeps its content_sha256 (NULL: rows of a build from
    -- before it may have none, read unchecked): see content_sha256_since.
    content_sha256_since timestamptz
);
CREATE TABLE app_holders (
    id serial PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    profile text NOT NULL,
    since timestamptz NOT NULL DEFAULT now(),
    url text,
    backend_pid integer NOT NULL DEFAULT pg_backend_pid()
);
CREATE TABLE app_audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    profile text NOT NULL,
    kind text NOT NULL,
    operation text NOT NULL,
    target text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}',
    host text NOT NULL,
    pid integer NOT NULL
);
-- Sessions and files (app.remote.store). A row in the trash has deleted_at, a reason and
-- the name the trash listing shows; its objects stay until empty-trash deletes the row.
CREATE TABLE app_sessions (
    id text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{32}$'),
    title text NOT NULL,
    metadata json NOT NULL DEFAULT '{}',  -- json, not jsonb: kept as sent (key order, U+0000)
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    deleted_at timestamptz,
    deleted_reason text,
    trash_name text UNIQUE,
    CHECK ((deleted_at IS NULL) = (trash_name IS NULL)),
    -- The SHA-256 of what its create acknowledged (app.remote.rows.content_sha256).
    content_sha256 text,
    -- The SHA-256 of its id and updated_at, written with every write that sets it
    -- (app.remote.rows.updated_sha256).
    updated_sha256 text
);
CREATE INDEX app_sessions_live ON app_sessions (id) WHERE deleted_at IS NULL;
CREATE TABLE app_files (
    id bigserial PRIMARY KEY,
    session_id text NOT NULL REFERENCES app_sessions (id),
    name text NOT NULL,
    blob text NOT NULL UNIQUE,
    size bigint NOT NULL,
    sha256 text NOT NULL,
    uploaded_at timestamptz NOT NULL,
    deleted_at timestamptz,
    deleted_reason text,
    trash_name text UNIQUE,
    CHECK ((deleted_at IS NULL) = (trash_name IS NULL)),
    -- The SHA-256 of what its upload acknowledged (app.store.records.record_sha256).
    content_sha256 text
);
-- At most one live file per name: two replicas racing to add a name cannot both commit.
CREATE UNIQUE INDEX app_files_live ON app_files (session_id, name) WHERE deleted_at IS NULL;
CREATE INDEX app_files_session ON app_files (session_id, uploaded_at, name);
CREATE INDEX app_files_trash ON app_files (deleted_at) WHERE deleted_at IS NOT NULL;
CREATE INDEX app_sessions_trash ON app_sessions (deleted_at) WHERE deleted_at IS NOT NULL;
-- A file's trashed versions, newest first by the time in their entry's name, as a 404, a
-- restore and each delete or replace look for them (TRASHED_INDEX).
CREATE INDEX app_files_trashed ON app_files (session_id, name,
    (left(trash_name, 22) COLLATE "C") DESC, id DESC) WHERE deleted_at IS NOT NULL;
-- How many live sessions (a page's total) without counting them: count(*) grows with the
-- table (14 ms at 100,000 rows). Kept by a trigger in the transaction of every change, in
-- 16 slots chosen by backend, so that replicas creating at once do not queue on one row.
CREATE TABLE app_session_counts (slot integer PRIMARY KEY, live bigint NOT NULL DEFAULT 0);
INSERT INTO app_session_counts (slot) SELECT generate_series(0, 15);
CREATE FUNCTION app_session_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta integer := 0;
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.deleted_at IS NULL THEN
        delta := delta + 1;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') AND OLD.deleted_at IS NULL THEN
        delta := delta - 1;
    END IF;
    IF delta <> 0 THEN
        UPDATE app_session_counts SET live = live + delta WHERE slot = pg_backend_pid() % 16;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER app_session_count AFTER INSERT OR DELETE OR UPDATE OF deleted_at
    ON app_sessions FOR EACH ROW EXECUTE FUNCTION app_session_count();
-- Which object prefix this database's rows name their objects under (app.remote.storage).
CREATE TABLE app_binding (
    id integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    database_id uuid NOT NULL DEFAULT gen_random_uuid(),
    bucket text NOT NULL,
    prefix text NOT NULL,
    bound timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION app_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'app_audit is append-only: % refused', TG_OP;
END $$;
CREATE TRIGGER app_audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON app_audit
    FOR EACH STATEMENT EXECUTE FUNCTION app_audit_append_only();
"""

#: The index of a file's trashed versions by session and name (red team 70 on regress): no
#: index of the app's served the look for a name's newest trashed row (`app_files_live`
#: holds live rows alone, `app_files_session` leads with the upload time): next to 200,000
#: trashed versions in one session, each upload of a new name there, under the session's
#: lock, went through all of them (100 to 125 ms of the database's time), and each file's
#: 404 and restore sorted them (bench/trashed_lookup.py). Its third column is
#: `app.remote.trash`'s ``_NAMED`` (``NAMED_TIME_LENGTH`` is 22) word for word, or the
#: planner cannot use it for the order. A new database has it from `_SCHEMA`; one made
#: before is told of it by `app data check` and given it by ``--repair`` under maintenance
#: (`app.remote.check`). Not a schema version: an earlier build works beside it unchanged
#: (only unique indexes are compared, `_index_drift`), and none needs it to be right.
TRASHED_INDEX: Final = " ".join(
    _SCHEMA[_SCHEMA.index("CREATE INDEX app_files_trashed") :].split(";", 1)[0].split()
)

#: `TRASHED_INDEX` as ``pg_get_indexdef`` gives it, its schema left out (as
#: `_APP_UNIQUE_INDEXES`' are): what `trashed_index_problem` compares an index of that name to.
TRASHED_INDEX_DEFINITION: Final = (
    "CREATE INDEX app_files_trashed ON app_files USING btree (session_id, name,"
    ' "left"(trash_name, 22) COLLATE "C" DESC, id DESC) WHERE (deleted_at IS NOT NULL)'
)


def trashed_index_problem(conn: psycopg.Connection[Any]) -> tuple[str, bool] | None:
    """What is wrong with the index `TRASHED_INDEX` in the connection's schema, and whether
    ``app data check --repair`` may mend it (drop what is there, if anything, and make the
    app's), or None where it is the app's and usable.

    The name alone said nothing (red team 70 on the remote backend): a DBA's ``CREATE INDEX
    CONCURRENTLY`` of it beside live replicas that failed (a lock timeout behind an upload,
    a cancel) leaves an INVALID index of that name, which the planner never uses, and one
    built by hand may index other columns; the check took either for the index, and the
    repair's ``IF NOT EXISTS`` made none. A relation of that name that is no index of
    app_files (a table of someone's) is named and left alone: the app drops only its own.
    """
    printed_plainly(conn)
    row = conn.cursor(row_factory=dict_row).execute(_TRASHED_INDEX_STATE).fetchone()
    if row is None:
        missing = (
            "the database has no index app_files_trashed (of trashed files' rows by session "
            "and name: made before it)"
        )
        return missing, True
    if row["kind"] != "i" or not row["ours"]:
        what = _RELATION_KINDS.get(row["kind"], f"a relation of kind {row['kind']!r}")
        return f"app_files_trashed is {what}, not the app's index of trashed files' rows", False
    shown = unqualified(str(row["definition"]))
    if shown != TRASHED_INDEX_DEFINITION:
        return f"the index app_files_trashed is not the app's: {shown}", True
    if not row["usable"] and row["building"] is not None:
        # A DBA's CREATE INDEX CONCURRENTLY still running (it waits for every transaction
        # that writes app_files to end, then builds): "INVALID (a failed ...)" and "drop it"
        # before (red team 70 on regress, the remote backend). Seen for the builds of the
        # app's role (or with pg_read_all_stats): another role's shows no relation here.
        building = (
            f"the index app_files_trashed is being built (a CREATE INDEX CONCURRENTLY under "
            f"way, by process {row['building']}, {row['phase']}): the database uses it once "
            "the build ends"
        )
        return building, False
    if not row["usable"]:
        invalid = (
            "the index app_files_trashed is INVALID (a failed CREATE INDEX or REINDEX "
            "CONCURRENTLY): the database never uses it"
        )
        return invalid, True
    return None


#: The schema ``pg_get_indexdef`` names its table in (``ON <schema>.app_files``): a name as
#: printed, quoted where it must be (doubling a quote inside), or plain.
_QUALIFIED: Final = re.compile(r' ON (?:"(?:[^"]|"")*"|[^\s".]+)\.')


#: An index's storage parameters as ``pg_get_indexdef`` prints them, right after its column
#: list (before its ``WHERE``, if any): ``WITH (fillfactor='60', deduplicate_items=off)``,
#: each value plain or a quoted literal.
_STORAGE_PARAMETERS: Final = re.compile(r"\) WITH \((?:[^()']|'(?:[^']|'')*')*\)(?= WHERE |$)")


def unqualified(definition: str) -> str:
    """An index's definition as ``pg_get_indexdef`` prints it, its table's schema and its
    storage parameters left out, to be compared with the app's. Cut as a run of non-spaces
    before a dot, a schema whose name has a space (``"App files"``, quoted) was left in, and
    a database the app had just made there was refused at its second open as "the app's
    tables changed", each unique index named, the remedy to drop and make it again printing
    the same (red team 70 on regress, branch rt-regress70i).

    The storage parameters (``ALTER INDEX ... SET (fillfactor = 70)``, ``deduplicate_items``,
    a DBA's tuning beside live replicas, which takes no replica down) change how the index is
    laid out, never which rows it holds or refuses: with one set on ``app_files_live``, every
    open (each replica's restart) was refused as "the app's tables changed", its remedy to
    drop the index that keeps two live files of one name apart and make it again, and on
    ``app_files_trashed`` the check called the index not the app's and ``--repair`` built it
    again (red team 71 on the remote backend)."""
    return _STORAGE_PARAMETERS.sub(")", _QUALIFIED.sub(" ON ", definition, count=1), count=1)


def printed_plainly(conn: psycopg.Connection[Any]) -> None:
    """Turn ``quote_all_identifiers`` off for the connection: `drift` and
    `trashed_index_problem` compare what ``pg_get_indexdef`` and ``pg_get_constraintdef``
    print with the app's definitions. On (``ALTER DATABASE ... SET``, the role's, or
    ``postgresql.conf``, as a dump tool's habit leaves it), each identifier printed quoted:
    a database the app had just made was refused at every open as "the app's tables changed",
    every column, constraint and index named, its undo a rewrite of every table (red team 70
    on regress, the remote backend). Any role may set it; it changes nothing else of the
    app's, whose statements never print identifiers. Set for the session, not the
    transaction: a connection in autocommit ends a ``SET LOCAL`` with its statement."""
    conn.execute("SELECT set_config('quote_all_identifiers', 'off', false)")


#: What `trashed_index_problem` reads of the relation named ``app_files_trashed``, if any.
_TRASHED_INDEX_STATE: Final = (
    "SELECT c.relkind::text AS kind, x.indrelid = to_regclass('app_files') AS ours,"
    " pg_get_indexdef(c.oid) AS definition, x.indisvalid AND x.indisready AS usable,"
    " b.pid AS building, b.phase FROM pg_class c LEFT JOIN pg_index x ON x.indexrelid = c.oid"
    " LEFT JOIN LATERAL (SELECT pid, phase FROM pg_stat_progress_create_index"
    " WHERE index_relid = c.oid ORDER BY pid LIMIT 1) b ON true"
    " WHERE c.oid = to_regclass('app_files_trashed')"
)
#: What `trashed_index_problem` calls a relation by its ``pg_class.relkind``.
_RELATION_KINDS: Final = {
    "i": "an index of another table",
    "r": "a table",
    "p": "a partitioned table",
    "v": "a view",
    "m": "a materialized view",
    "S": "a sequence",
    "f": "a foreign table",
    "c": "a composite type",
    "I": "a partitioned index",
}

#: The app's tables, in the order `_SCHEMA` creates them: a table another references comes
#: first, so ``SET LOGGED`` in this order never makes a logged table reference an unlogged one.
APP_TABLES = tuple(re.findall(r"^CREATE TABLE (\w+)", _SCHEMA, re.MULTILINE))

# Databases stamped before app_binding existed get it on their next open.
_BINDING = _SCHEMA[
    _SCHEMA.index("CREATE TABLE app_binding") : _SCHEMA.index("CREATE FUNCTION app_audit")
]

# A row is live while the backend it names holds both the shared lock and the row's own lock.
# (Formatted from integer constants only.)
_LIVE = f"""
SELECT h.id, h.host, h.pid, h.profile, h.since, h.url, h.backend_pid,
    (SELECT a.application_name FROM pg_stat_activity a WHERE a.pid = h.backend_pid)
    AS session_name
FROM app_holders h
WHERE EXISTS (
    SELECT 1 FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.pid = h.backend_pid AND l.classid = {ROW_LOCK_CLASS} AND l.objid = h.id
) AND EXISTS (
    SELECT 1 FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.pid = h.backend_pid AND l.classid = {HOLDERS_LOCK[0]} AND l.objid = {HOLDERS_LOCK[1]}
)
ORDER BY h.since, h.id
"""  # noqa: S608


# --- addresses ---------------------------------------------------------------------------


@dataclass(frozen=True, order=True, slots=True)
class DatabaseAddress:
    """A database, normalised for distinctness checks: host, port, database name.

    Loopback names and Unix-socket directories all become ``localhost``: on one machine they
    usually reach the same server, and a false "same database" is a refusal that a setting
    fixes, while a false "different" is the incident.
    """

    host: str
    port: int
    dbname: str

    def __str__(self) -> str:
        return f"{self.host}:{self.port}/{self.dbname}"


def _params(database_url: str) -> dict[str, Any]:
    try:
        return dict(conninfo_to_dict(database_url))
    except psycopg.ProgrammingError as error:
        raise DatabaseUnavailableError("(unparsable database_url)", str(error).strip()) from None


def _service(params: Mapping[str, Any]) -> dict[str, str]:
    """The parameters of the connection service that ``params`` (or ``PGSERVICE``) names,
    found as libpq finds them: its section of the user's service file, else of the system's.
    """
    # libpq applies a service only inside a connection attempt, and has no call that resolves
    # one without connecting (PQconndefaults reads PGSERVICE alone).
    name = params.get("service") or os.environ.get("PGSERVICE")
    if not name:
        return {}
    mine = Path(os.environ.get("PGSERVICEFILE") or Path("~/.pg_service.conf").expanduser())
    # PGSYSCONFDIR, else the directory Debian's libpq was built with.
    system = Path(os.environ.get("PGSYSCONFDIR") or "/etc/postgresql-common") / "pg_service.conf"
    for path in (mine, system):
        found = _service_section(path, str(name))
        if found is not None:
            return found
    return {}


def _service_section(path: Path, name: str) -> dict[str, str] | None:
    """Section ``name`` of service file ``path`` as libpq's ``parseServiceFile`` reads it;
    None where the file is not there or has no such section.

    Not `configparser` (as it was): it merges a section given twice and keeps a key's last
    value, where libpq stops at the end of the section's first appearance and keeps a key's
    first value (it never overrides a value it has). A ``[staging]`` section appended again
    to change its host (or a ``host=`` line added below the old one) was another database to
    the overlap check than the one libpq connected to: production's, said to be distinct
    (red team 52). Lines are stripped; ``#`` starts a comment line; a header is ``[name]``
    followed by anything; ``key=value`` splits at the first ``=``, nothing trimmed around it.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return None  # libpq passes over a file it cannot find
    section: dict[str, str] | None = None
    for raw in data.decode("utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if section is not None:
                break  # the end of the section's first appearance: libpq reads no further
            if line[1 : len(name) + 1] == name and line[len(name) + 1 : len(name) + 2] == "]":
                section = {}
            continue
        if section is None:
            continue
        key, equals, value = line.partition("=")
        if not equals:
            break  # libpq refuses the file ("syntax error in service file")
        section.setdefault(key, value)  # the first value counts, as in libpq
    return section


def _os_user() -> str:
    """The user libpq connects as when neither the URL nor ``PGUSER`` names one, and so the
    database it names by default: the name of the process's effective uid, as libpq's
    ``pg_fe_getusername`` finds it. Not `getpass.getuser`, which reads ``$LOGNAME`` and
    ``$USER`` first: a container's ``ENV USER=``, ``sudo -E`` or ``su`` without ``-`` left
    them naming another user, and two profiles on one database were two (red team 51)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid with no entry (a container's): libpq fails to connect then
        pass
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.geteuid()}"


def _server_name(name: str) -> str:
    # The server cuts a longer database name to this many bytes, and connects to, creates or
    # drops the database so named: the name to check is the one it will use.
    return name.encode()[:_NAME_BYTES].decode(errors="ignore")


def database_addresses(database_url: str) -> tuple[DatabaseAddress, ...]:
    """The databases a URL may connect to (one per host it lists), normalised.

    Unset parts are filled as libpq fills them: from the connection service the URL or
    ``PGSERVICE`` names (``service=``, a section of ``pg_service.conf``), then from ``PG*``
    variables (``PGHOSTADDR`` too), then libpq's defaults.
    """
    explicit = _params(database_url)
    params = {**_service(explicit), **explicit}

    def given(key: str, variable: str) -> str:
        # A parameter given empty (`dbname=`, `?port=`, `host=''`, a service's `dbname=`) is
        # given, to libpq: it takes its built-in default then (the user's name, 5432, the
        # socket directory), never the PG* variable, which fills only a parameter not given
        # at all. Read as unset, staging's `dbname=` beside a shell's PGDATABASE was that
        # database to the check, and the user's (production's) to libpq (red team 59).
        value = params[key] if key in params else os.environ.get(variable)
        return str(value or "")

    # libpq fills hostaddr from PGHOSTADDR as it fills host from PGHOST, and connects to it,
    # the host name only naming it (red team 39: a name of staging's reached production).
    hostaddr_list = given("hostaddr", "PGHOSTADDR").split(",")
    host_list = given("host", "PGHOST").split(",")
    if hostaddr_list != [""]:
        # One address per host, and where an address is empty libpq connects to the host
        # named at the same place (a list's lengths differ: libpq refuses it).
        host_list += [""] * (len(hostaddr_list) - len(host_list))
        host_list = [a or h for a, h in zip(hostaddr_list, host_list, strict=False)]
    user = given("user", "PGUSER") or _os_user()
    dbname = _server_name(given("dbname", "PGDATABASE") or user)
    port_list = (given("port", "PGPORT") or "5432").split(",")
    if len(port_list) == 1:
        port_list *= len(host_list)
    addresses = set()
    for host, port in zip(host_list, port_list, strict=False):
        name = host.strip().lower()
        if not name or name.startswith("/") or is_this_machine(name):
            name = "localhost"
        addresses.add(DatabaseAddress(name, int(port or 5432), dbname))
    return tuple(sorted(addresses))


#: `target_session_attrs` values that send libpq to a server the app cannot write to.
_READ_ONLY_TARGETS = frozenset({"read-only", "standby", "prefer-standby"})


def read_only_target(database_url: str) -> tuple[str, str] | None:
    """The ``target_session_attrs`` that has libpq connect only (or first) to a standby or
    a read-only server, and where it is set (``database_url``, the service's section, or
    ``PGTARGETSESSIONATTRS``, in libpq's order), or ``None``.

    The app writes (its stamp, a replica's hold, every change): `read-only` and `standby`
    were refused as "cannot connect ... Check that the server runs", which it did, and
    `prefer-standby` reached a standby whenever one answered, every change refused and told
    to point database_url at the primary, which it named (red team 57).
    """
    explicit = _params(database_url)
    service = _service(explicit)
    for value, where in (
        (explicit.get("target_session_attrs"), "database_url"),
        (
            service.get("target_session_attrs"),
            f"the service {explicit.get('service') or os.environ.get('PGSERVICE')!r}",
        ),
        (os.environ.get("PGTARGETSESSIONATTRS"), "the environment's PGTARGETSESSIONATTRS"),
    ):
        if value:
            return (str(value), where) if str(value) in _READ_ONLY_TARGETS else None
    return None


def same_database(first_url: str, second_url: str) -> bool:
    """Whether two URLs may name one database (any normalised address in common)."""
    return bool(set(database_addresses(first_url)) & set(database_addresses(second_url)))


def mask_url(database_url: str) -> str:
    """The URL as shown in messages: ``postgresql://user@host:port/dbname``, no password."""
    params = _params(database_url)
    user = f"{params['user']}@" if params.get("user") else ""
    address = database_addresses(database_url)[0]
    hosts = str(params.get("host") or "").split(",")
    if len(hosts) > 1:
        # Each host with its own port, in the URL's order, as libpq tries them: a refusal
        # of a list (a standby listed before the primary) named the first address after
        # sorting with the port of another (red team 59).
        ports = str(params.get("port") or "").split(",")
        ports = ports * len(hosts) if len(ports) == 1 else ports
        default = str(os.environ.get("PGPORT") or 5432) if "port" not in params else "5432"
        shown = ",".join(
            f"{_url_host(host.strip() or 'localhost')}:{(port.strip() or default)}"
            for host, port in zip(hosts, ports, strict=False)
        )
        return f"postgresql://{user}{shown}/{address.dbname}"
    host = _url_host(str(params.get("host") or address.host))
    return f"postgresql://{user}{host}:{address.port}/{address.dbname}"


def _url_host(host: str) -> str:
    """``host`` as a URL writes it, for libpq to read back: an IPv6 address in brackets, a
    socket directory with its slashes escaped. Shown bare, ``postgresql://app@::1:5433/db``
    told no one where the address ended and the port began, and ``postgresql:///tmp:5432/db``
    read as a database named ``tmp:5432/db`` (red team 59)."""
    if host.startswith("/"):
        return host.replace("%", "%25").replace("/", "%2F")
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


# --- connections -------------------------------------------------------------------------


class WaitTimeoutError(psycopg.OperationalError):
    """The server did not answer within a connection's ``wait_seconds``; the connection was
    closed (see :func:`bounded_connection`)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"no answer within {seconds:g} s (database_wait_seconds); the connection was closed"
        )
        self.seconds = seconds


def bounded_connection(
    wait_seconds: float, record: Callable[[psycopg.Error | None], object] | None = None
) -> type[psycopg.Connection[Any]]:
    """A connection class whose every wait for the server ends within ``wait_seconds``;
    ``record`` is told why each connect fails.

    A server that is hung rather than gone (its processes stopped with SIGSTOP, a frozen VM,
    a proxy that stops forwarding) leaves a query waiting for ever: the peer's kernel still
    acknowledges every byte and every keepalive probe, so neither libpq's keepalives nor its
    ``tcp_user_timeout`` fire, and ``statement_timeout`` runs in the server that is stopped.
    libpq has no client-side bound on a query; a cancel request (``cancel_safe``) goes through
    the postmaster and is handled by the backend, both of which may be the ones stopped. So
    the wait is bounded here, in the one place every statement, fetch, commit and rollback of
    a psycopg connection waits (`Connection.wait`, with psycopg's own deadline), and a wait
    past it closes the connection, as pgx and JDBC's socketTimeout do: the server rolls back
    what was not committed when it sees the close, and a pool discards the connection.
    """
    # psycopg's deadline raises its internal `_WaitTimeout` (an OperationalError); it is
    # turned into `WaitTimeoutError` here, so that the rest of the app depends on no private
    # name (tests/test_redteam_s28_remote.py fails if psycopg changes it).
    from psycopg.errors import _WaitTimeout

    class BoundedConnection(psycopg.Connection[Any]):
        @classmethod
        def connect(cls, *args: Any, **kwargs: Any) -> Self:
            try:
                return super().connect(*args, **kwargs)
            except psycopg.OperationalError as error:
                if record is not None:
                    record(error)
                raise

        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            if timeout is not None and timeout <= wait_seconds:
                return super().wait(gen, interval, timeout)
            try:
                return super().wait(gen, interval, wait_seconds)
            except _WaitTimeout:
                # The generator stopped mid-exchange: what the server may still send is of
                # no use, and the connection cannot be used again.
                self.pgconn.finish()
                raise WaitTimeoutError(wait_seconds) from None

    return BoundedConnection


def conninfo(database_url: str, *, purpose: str = "app", connect_timeout: int | None = None) -> str:
    """The connection string :func:`connect` uses (keepalives, ``application_name``); for a
    pool, which opens its connections itself. ``connect_timeout`` (seconds) replaces the
    default one, unless the URL sets its own."""
    params = _params(database_url)
    defaults = dict(_CONNECT_DEFAULTS)
    if connect_timeout is not None:
        defaults["connect_timeout"] = str(connect_timeout)
    extra = {key: value for key, value in defaults.items() if key not in params}
    name = f"{purpose} ({socket.gethostname()} pid {os.getpid()})"[:63]
    extra.setdefault("application_name", params.get("application_name") or name)
    return make_conninfo(database_url, **extra)


@dataclass(frozen=True, slots=True)
class Bounds:
    """How long a connection of the app waits on the database: for any answer
    (``database_wait_seconds``, :func:`bounded_connection`) and for a lock another client
    holds (``database_lock_wait_seconds``, the session's ``lock_timeout``)."""

    wait_seconds: float
    lock_wait_seconds: float


IDLE_SESSION_FLOOR_MS = 5000
"""The least ``idle_session_timeout`` the app's connections keep (five heartbeats)."""


def configure_session(conn: psycopg.Connection[Any], lock_wait_seconds: float) -> None:
    """The session settings every connection of the app's own code carries, pooled or not.

    ``lock_timeout``: without it a statement waits for ever for a row, a table or an advisory
    lock another client holds (`SELECT ... FOR UPDATE`, `LOCK TABLE` in psql, an open of the
    database stopped halfway), holding its connection meanwhile (red team 27; every command
    and every replica's start waited for ever behind a stopped first open). Set here, so that
    it wins over the role's.

    ``synchronous_commit``: a commit answered before its WAL is written is lost by a crash of
    the server, though the app said it was saved (red team 27). ``off`` is turned ``on``, and
    so is ``local`` (red team 64: against a synchronous standby, ``synchronous_standby_names``,
    a commit is then answered before the standby has it, and a failover to that standby
    loses it; with none, ``local`` is ``on``); ``remote_write``, ``on`` and ``remote_apply``
    wait for the standby too, and are kept. Each write sets it again for its own transaction,
    at its commit point (``app.remote.db``): a session's value can change after this (a reload
    of the server's configuration, ``ALTER SYSTEM``, changes it where no ``SET`` did), and a
    trigger's ``SET LOCAL`` during the write (red team 65 on regress).

    ``default_transaction_isolation``: the app's changes lock the rows they build on (the
    session's, ``FOR NO KEY UPDATE``) and read again after the wait, which is read committed's
    way. Under the database's or the role's ``serializable`` or ``repeatable read``, two
    uploads to one session at once were refused (a 503, ``40001``) about half the time (red
    team 37): nothing was lost, but a client's parallel uploads failed for a setting the app
    does not need.

    ``idle_session_timeout`` (PostgreSQL 14 and later) below :data:`IDLE_SESSION_FLOOR_MS`
    is raised to it: a replica's holding connection pings every second, and one set for the
    role as ``300`` (milliseconds, meant as seconds) ended every replica's hold within a
    second of its start, each restart the same (red team 37). Above the floor it is kept: it
    is what frees a vanished replica's lock (remote.md). ``idle_in_transaction_session_timeout``
    the same: at ``1`` (a millisecond) every change was refused (25P03), the time between two
    of its statements being enough; a file's restore asks the object store in its transaction.

    ``DateStyle`` and ``IntervalStyle``: the forms psycopg reads values in. Under a DateStyle
    of German, SQL or Postgres (for the database or the role) every read of a timestamp
    raised NotImplementedError, a traceback at every open (red team 37). Set here, not as
    startup ``options``, which PgBouncer refuses ("unsupported startup parameter").

    ``session_replication_role``: under ``replica`` (for the database or the role, as a
    replication tool or a bulk load leaves it) no trigger fires, so the live sessions'
    count the app keeps by trigger drifted for good (`GET /sessions` said 1 of 4), and the
    audit table was no longer append-only (red team 37). Set back to ``origin``; a role that
    may not set it is refused (42501), naming it.

    ``row_security``: off, so that a query row security would filter (a policy, or none, on
    an app table, for a role subject to it) fails rather than return some rows as all of
    them: `app data check --repair` took the objects of the rows hidden for orphans and
    deleted them (red team 62 on regress). Any role may set it; for one row security does
    not apply to (the tables' owner, a superuser) it changes nothing.
    """
    conn.execute(
        "SELECT set_config('lock_timeout', %s, false), CASE WHEN"
        " current_setting('synchronous_commit') IN ('off', 'local') THEN"
        " set_config('synchronous_commit', 'on', false) END,"
        " set_config('default_transaction_isolation', 'read committed', false),"
        " set_config('DateStyle', 'ISO, MDY', false),"
        " set_config('IntervalStyle', 'postgres', false),"
        " CASE WHEN (SELECT setting::bigint FROM pg_settings"
        " WHERE name = 'idle_session_timeout') BETWEEN 1 AND %s"
        " THEN set_config('idle_session_timeout', %s, false) END,"
        " CASE WHEN (SELECT setting::bigint FROM pg_settings"
        " WHERE name = 'idle_in_transaction_session_timeout') BETWEEN 1 AND %s"
        " THEN set_config('idle_in_transaction_session_timeout', %s, false) END,"
        " CASE WHEN current_setting('session_replication_role') <> 'origin'"
        " THEN set_config('session_replication_role', 'origin', false) END,"
        " set_config('row_security', 'off', false)",
        (
            f"{max(1, round(lock_wait_seconds * 1000))}ms",
            IDLE_SESSION_FLOOR_MS - 1,
            f"{IDLE_SESSION_FLOOR_MS}ms",
            IDLE_SESSION_FLOOR_MS - 1,
            f"{IDLE_SESSION_FLOOR_MS}ms",
        ),
    )


def connect(
    database_url: str,
    *,
    purpose: str = "app",
    autocommit: bool = False,
    connect_timeout: int | None = None,
    bounds: Bounds | None = None,
) -> psycopg.Connection[tuple[Any, ...]]:
    """Open a connection, with keepalives, named after ``purpose`` in ``pg_stat_activity``
    (``connect_timeout``: as for :func:`conninfo`; ``bounds``: every wait for an answer
    bounded, as by :func:`bounded_connection`, and the session's settings of a pooled
    connection, :func:`configure_session`).

    Every connection of the app's own code (the stamp, a replica's :class:`Holder`,
    :func:`maintenance`, ``app status`` and ``app doctor``) opens here, so under a test run
    this is where a database that is not one of the run's scratch ones is refused, however
    the caller came by its URL (:func:`app.sandbox.check_scratch`).

    Raises:
        SandboxViolationError: under pytest, a database that is not the run's scratch one.
        DatabaseUnavailableError: the server cannot be reached.
    """
    sandbox.check_scratch("database_url", database_url, f"connecting ({purpose}) to")
    wait_seconds = None if bounds is None else bounds.wait_seconds
    conn = _connect(database_url, purpose, autocommit, connect_timeout, wait_seconds)
    try:
        check_reached(conn, f"connecting ({purpose}) to")
        where = mask_url(database_url)
        check_encoding(conn, where)
        with refusals(where, f"the settings of a connection ({purpose})"):
            if bounds is not None:
                configure_session(conn, bounds.lock_wait_seconds)
            _pin_found_schema(conn)
            if not autocommit:
                conn.commit()
    except BaseException:
        conn.close()
        raise
    return conn


def check_reached(conn: psycopg.Connection[Any], what: str) -> None:
    """Under a test run, refuse the database libpq connected to (after its service file and
    the ``PG*`` variables, as they were when it connected) unless it is a scratch one: what
    a URL seemed to name may differ. :func:`connect` checks every connection so, and a
    store's pool each one it opens (red team 59: the pool's were not, and a URL the check
    misread reached a database outside the run).

    Raises:
        SandboxViolationError: under pytest, a database that is not the run's scratch one.
    """
    info = conn.info
    reached = make_conninfo("", host=info.host, port=str(info.port), dbname=info.dbname)
    sandbox.check_scratch("database_url", reached, what)


def check_encoding(conn: psycopg.Connection[Any], where: str) -> None:
    """Refuse a database that does not store text as UTF-8, or a connection that does not
    carry it so, before anything is read or written (red team 25).

    A database made with another encoding (``initdb`` under a C locale gives SQL_ASCII,
    and ``CREATE DATABASE`` copies its template's) took some names and not others: in
    LATIN1 an emoji title or file name failed as an encoding error (a 500), and the file
    ``é.txt`` was written and then could not be read back; in SQL_ASCII psycopg reads text
    as bytes, and the database's own stamp was taken for another profile's
    (``b'production'``). Both encodings come from the connection's startup parameters: no
    query is sent.

    Raises:
        DatabaseEncodingError: naming the database, its encoding and the fix.
    """
    server = conn.info.parameter_status("server_encoding") or "unknown"
    client = conn.info.parameter_status("client_encoding") or "unknown"
    if server != "UTF8" or client != "UTF8":
        raise DatabaseEncodingError(where, server, client)


def _connect(
    database_url: str,
    purpose: str,
    autocommit: bool,
    connect_timeout: int | None,
    wait_seconds: float | None = None,
) -> psycopg.Connection[tuple[Any, ...]]:
    info = conninfo(database_url, purpose=purpose, connect_timeout=connect_timeout)
    kind = psycopg.Connection if wait_seconds is None else bounded_connection(wait_seconds)
    try:
        return kind.connect(info, autocommit=autocommit)
    except psycopg.OperationalError as error:
        where = mask_url(database_url)
        refused = refused_connection(
            where, error, what=f"a connection ({purpose})", database_url=database_url
        )
        raise refused or (
            DatabaseUnavailableError(
                where, _reason(error), environment=libpq_environment(database_url)
            )
        ) from None


# Deprecated, still read by libpq, and not among its connection defaults.
_MORE_ENVIRONMENT = (("requiressl", "PGREQUIRESSL"),)


def libpq_environment(database_url: str) -> str:
    """A sentence naming the ``PG*`` variables of this process's environment that libpq
    applies to ``database_url`` (those for parameters the URL leaves unset), or ``""``.

    A connection refused for one of them (``PGSSLMODE=require`` against a server without
    TLS, ``PGTARGETSESSIONATTRS=standby``, ``PGREQUIREAUTH``) was "check that the server
    runs and that database_url names it", both of which held (red team 39).
    """
    import shlex

    try:
        given = set(_params(database_url))
    except DatabaseUnavailableError:
        return ""
    options = [
        (o.keyword.decode(), o.envvar.decode(), o.dispchar == b"*")
        for o in psycopg.pq.Conninfo.get_defaults()
        if o.envvar
    ]
    options += [(keyword, name, False) for keyword, name in _MORE_ENVIRONMENT]
    found = [
        f"{name}=(set)" if secret else f"{name}={shlex.quote(os.environ[name])}"
        for keyword, name, secret in options
        if name in os.environ and keyword not in given
    ]
    if not found:
        return ""
    return (
        f". This process's environment also gives libpq {', '.join(found)}, each applied "
        "where database_url does not set its parameter: unset any that should not apply "
        "(a shell's profile, the service's Environment=), or set it in database_url"
    )


def _reason(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


_RETRY = "retry; if it recurs, ask the database's administrator"
_TIMEOUT = (
    "another transaction may hold what it waited for: `SELECT pid, state, wait_event, query "
    "FROM pg_stat_activity WHERE datname = current_database()` shows who; retry once it is "
    "done, or raise {setting} where it is set: `SELECT setting, source FROM pg_settings WHERE "
    "name = '{setting}'` says where (the server, the database: ALTER DATABASE {dbname} SET "
    "{setting} = ..., the app's role: ALTER ROLE <role> SET {setting} = ..., the app's role "
    "in this database (source 'database user'): ALTER ROLE <role> IN DATABASE {dbname} SET "
    "{setting} = ..., or the "
    "options in database_url: -c {setting}=...)"
)
_CHANGED = (
    "The app's tables are not as the app made them, or not where this process found them: "
    "a column dropped, renamed, of another type or of a case-insensitive collation, a "
    "constraint or column of another's that refuses the app's rows, a sequence behind its "
    "table's ids (a copy made by logical replication), a table or its schema renamed, since "
    "it opened the database. "
    "`app doctor` names each difference from the app's tables and the statements that undo "
    "it: run them as the tables' owner, then retry"
)
# By SQLSTATE (or its class, the first two characters): how a server that was reached refuses
# a statement, and what resolves it. Everything else is not a refusal: a broken connection
# (class 08, 57P01-57P03: DatabaseUnavailableError) or a bug (a raw psycopg error).
_REFUSALS: dict[str, str] = {
    "25006": (
        "The database is read-only for the app: default_transaction_read_only is on for it "
        "or for the app's role (`ALTER DATABASE {dbname} RESET default_transaction_read_only`, "
        "`ALTER ROLE <role> RESET default_transaction_read_only` and `ALTER ROLE <role> IN "
        "DATABASE {dbname} RESET default_transaction_read_only`, from a session that ran `SET "
        "default_transaction_read_only = off` first; `SELECT source FROM pg_settings WHERE "
        "name = 'default_transaction_read_only'` says which), or database_url names a "
        "standby: point it at the primary"
    ),
    "25P03": (
        "The server ended the connection, idle in its transaction longer than "
        "idle_in_transaction_session_timeout: retry; if it recurs, raise that setting where "
        "it is set (`SELECT setting, source FROM pg_settings WHERE name = "
        "'idle_in_transaction_session_timeout'` says where: the database, the app's role, "
        "the role in this database (ALTER ROLE <role> IN DATABASE {dbname}), or the options "
        "in database_url); the app raises a value under 5 s to 5 s"
    ),
    "57014": "A statement ran past statement_timeout, or was cancelled: "
    + _TIMEOUT.replace("{setting}", "statement_timeout"),
    # The app sets lock_timeout on its pooled connections (app.remote.db): the setting
    # that resolves it is the app's, not the role's.
    "55P03": (
        "A lock was not granted within lock_timeout: another transaction holds what it "
        "waited for: `SELECT pid, state, wait_event, query FROM pg_stat_activity WHERE "
        "datname = current_database()` shows who, and `pg_blocking_pids(<pid>)` which one "
        "blocks; retry once it is done, or raise database_lock_wait_seconds "
        "(APP_DATABASE_LOCK_WAIT_SECONDS), which the app sets as its lock_timeout. A blocker "
        "no process holds (`pg_blocking_pids` says 0) is a prepared transaction (two-phase "
        "commit), which a restart of the server keeps and which never ends on its own: "
        "`SELECT gid, owner, prepared FROM pg_prepared_xacts WHERE database = "
        "current_database()` lists them (`app doctor` names those that hold the app's "
        "tables), and `ROLLBACK PREPARED '<gid>'` (or `COMMIT PREPARED`, where the "
        "transaction manager that prepared it committed its other parts), as its owner, "
        "ends one"
    ),
    "42501": (
        "The app's role lacks the privilege the reason names: grant it, or connect as the "
        "role that owns the app's tables (`\\dt app_*` in psql shows it). If it names "
        "session_replication_role, the database or the role sets it to replica, which only "
        "a superuser may set back: `ALTER DATABASE {dbname} RESET session_replication_role` "
        "and the same for the role resolve it. If it names row-level security, row security "
        "was switched on for an app table since this process opened the database (the app "
        "reads with row_security off, so that no query returns some rows as all of them): "
        "as the tables' owner, `ALTER TABLE <that table> DISABLE ROW LEVEL SECURITY` "
        "resolves it, and `app doctor` names every such table"
    ),
    "53100": (
        "The database server's disk is full: free space on the volume of its data directory "
        "(or its WAL), then retry"
    ),
    "53200": "The database server is out of memory: " + _RETRY,
    "53300": (
        "The database server has no connection to spare (max_connections): stop idle "
        "clients, serve with fewer workers or replicas, or raise max_connections, then retry"
    ),
    "53": "The database server is out of a resource: " + _RETRY,
    "54": "The statement is past one of the server's limits: " + _RETRY,
    "58": "The database server failed to read or write its files: " + _RETRY,
    "40": "It conflicted with another transaction: retry",
    # Red team 63: a statement of the app's that does not fit its own tables as they are now
    # (a CHECK of another's, a column dropped, retyped or NOT NULL, a schema renamed) was a
    # bare psycopg error, 500, a traceback on the command line. The open refuses each such
    # change since (pg.drift); under a live replica, made after its open, it is this.
    "22": _CHANGED,
    "23": _CHANGED,
    "42703": _CHANGED,
    "42P01": _CHANGED,
    "42804": _CHANGED,
}


#: The server's words for a connection refused at a connection limit of the role's or of the
#: database's (``ALTER ROLE ... CONNECTION LIMIT``, ``ALTER DATABASE ... CONNECTION LIMIT``;
#: SQLSTATE 53300, which libpq does not hand psycopg for a refused connect: read in its
#: message): which object, and its name as the server quotes it.
_CONNECTION_LIMIT: Final = re.compile(r'too many connections for (role|database) "((?:[^"]|"")*)"')


#: The server's words for a connection refused at its own limit (SQLSTATE 53300, read in its
#: message as `_CONNECTION_LIMIT`): every slot of max_connections taken, or all but those it
#: keeps for superusers (PostgreSQL 15's words, then 16's).
_SERVER_FULL: Final = re.compile(
    r"sorry, too many clients already|remaining connection slots are reserved for"
)


#: The server's words for a connection refused because the role may not log in (``ALTER ROLE
#: ... NOLOGIN``, SQLSTATE 28000, read in its message as `_CONNECTION_LIMIT`): its name.
_NOT_PERMITTED_TO_LOG_IN: Final = re.compile(r'role "((?:[^"]|"")*)" is not permitted to log in')


def _sql_literal(name: str) -> str:
    return "'" + name.replace("'", "''") + "'"


def _sql_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


#: The server's words for a connection whose authentication it refused (SQLSTATE 28P01 for
#: a password, 28000 otherwise): the method (``password`` for password, md5 and scram-sha-256
#: alike; ``Peer``, ``Ident``, ``certificate``, ``LDAP``...) and the role.
_AUTHENTICATION_FAILED: Final = re.compile(r'(\S+) authentication failed for user "((?:[^"]|"")*)"')
#: libpq's words when the password it sent came from a password file.
_PASSWORD_FROM_FILE: Final = re.compile(r'password retrieved from file "([^"]*)"')
#: The server's words for a connection that no line of its pg_hba.conf lets in (SQLSTATE
#: 28000): the host, the role and the database it names.
_NO_HBA_LINE: Final = re.compile(
    r'(?:no pg_hba\.conf entry|pg_hba\.conf rejects connection) for host "([^"]*)", '
    r'user "((?:[^"]|"")*)", database "((?:[^"]|"")*)"'
)


def _password_source(database_url: str | None, reason: str) -> str:
    """Where libpq took the password it sent from, in its own order: database_url's own,
    its connection service's section, ``PGPASSWORD``, then a password file (libpq names the
    file in its message, and only then)."""
    from_file = _PASSWORD_FROM_FILE.search(reason)
    if from_file is not None:
        return (
            f"the password file {from_file.group(1)} (PGPASSFILE, else ~/.pgpass), its first "
            "line that matches this host, port, database and user (host:port:database:user:"
            "password)"
        )
    params: dict[str, Any] = {}
    with contextlib.suppress(DatabaseUnavailableError):
        params = _params(database_url) if database_url is not None else {}
    if params.get("password"):
        return (
            "database_url's own password (`app config` says where database_url is set: "
            "APP_DATABASE_URL, a .secrets.toml...)"
        )
    service = _service(params)
    if service.get("password"):
        name = params.get("service") or os.environ.get("PGSERVICE")
        return f"the password= of the connection service {name}'s section (pg_service.conf)"
    if os.environ.get("PGPASSWORD"):
        return "PGPASSWORD in this process's environment (a shell's profile, Environment=)"
    return "none that this process can name"


#: libpq's words when the server asked for a password and libpq found none to send (no
#: SQLSTATE: libpq's own refusal, the server's request unanswered).
_UNANSWERED_REQUEST: Final = "fe_sendauth: no password supplied"


def _password_missing(database_url: str | None) -> str:
    """Where libpq looked for a password, in its own order, each as this process finds it,
    and what to set (`DatabasePasswordMissingError`)."""
    params: dict[str, Any] = {}
    with contextlib.suppress(DatabaseUnavailableError):
        params = _params(database_url) if database_url is not None else {}
    service = params.get("service") or os.environ.get("PGSERVICE")
    passfile = Path(
        params.get("passfile") or os.environ.get("PGPASSFILE") or Path("~/.pgpass").expanduser()
    )
    user = params.get("user") or os.environ.get("PGUSER") or getpass.getuser()
    line = ":".join(
        str(params.get(key) or os.environ.get(env) or default).replace(":", "\\:")
        for key, env, default in (
            ("host", "PGHOST", "localhost"),
            ("port", "PGPORT", "5432"),
            ("dbname", "PGDATABASE", user),
        )
    )
    try:
        found = passfile.stat()
    except OSError as error:
        state = f"is not there ({error.strerror})"
    else:
        if not stat.S_ISREG(found.st_mode):
            state = "is not a regular file, which libpq skips"
        elif found.st_mode & 0o077:
            state = (
                f"has group or world access ({stat.filemode(found.st_mode)}), so libpq skips "
                f"it: `chmod 600 {passfile}`"
            )
        else:
            state = f"has no line that matches {line}:{user}"
    return (
        "The server's pg_hba.conf has it authenticate this host by password, and libpq found "
        "none where it looks, in this order: database_url's own (postgresql://user:password@"
        "host/database; `app config` says where database_url is set), none; the password= of "
        + (
            f"the connection service {service}'s section (pg_service.conf), none; "
            if service
            else "a connection service's section (pg_service.conf), none named; "
        )
        + "PGPASSWORD, not set in this process's environment; the password file "
        f"{passfile} (PGPASSFILE, else ~/.pgpass), which {state}. Give the password in one "
        f"of them (a line `{line}:{user}:<password>` in the password file, mode 600; "
        "database_url in .secrets.toml or APP_DATABASE_URL), then retry"
    )


def _authentication_refused(
    database_url: str | None, error: psycopg.Error
) -> tuple[str, str] | None:
    """The SQLSTATE and the remedy of a connection whose authentication the server refused,
    or ``None``. Each was "Check that the server runs and that database_url names it", both
    of which held (red team 75 on the remote backend: a password expired under a live
    replica, ``VALID UNTIL`` past, changed, or wrong, which PostgreSQL words alike)."""
    reason = str(error)
    failed = _AUTHENTICATION_FAILED.search(reason)
    if failed is not None and failed.group(1) == "password":
        name = failed.group(2).replace('""', '"')
        # What the user runs, quoted in the message: not a statement this process sends.
        return "28P01", (
            f"The server refused the password of role {name}: it is wrong, was changed, or "  # noqa: S608
            'has expired (PostgreSQL answers all three alike; its log says which: "has an '
            f'expired password" for the last). The password sent came from '
            f"{_password_source(database_url, reason)}. As a superuser or a role "
            f"with CREATEROLE, `SELECT rolvaliduntil FROM pg_roles WHERE rolname = "
            f"{_sql_literal(name)}` shows when it expires, and `ALTER ROLE "
            f"{_sql_identifier(name)} PASSWORD '<new>' VALID UNTIL 'infinity'` sets a new one "
            "(or a later date); give the current one there, then retry"
        )
    if failed is not None:
        method, name = failed.group(1), failed.group(2).replace('""', '"')
        return "28000", (
            f"The server's pg_hba.conf has it authenticate role {name} by {method} from this "  # noqa: S608
            f"host, and {method} refused it: the server's log says why. As a superuser, "
            "`SELECT line_number, type, database, user_name, address, auth_method FROM "
            "pg_hba_file_rules` lists its lines, the first that matches applies; change the "
            "line or what that method checks, `SELECT pg_reload_conf()`, then retry"
        )
    no_line = _NO_HBA_LINE.search(reason)
    if no_line is not None:
        host, name = no_line.group(1), no_line.group(2).replace('""', '"')
        database = no_line.group(3).replace('""', '"')
        return "28000", (
            f"No line of the server's pg_hba.conf lets role {name} connect to database "  # noqa: S608
            f"{database} from host {host} (or the first that matches rejects it). As a "
            "superuser, `SELECT line_number, type, database, user_name, address, auth_method "
            "FROM pg_hba_file_rules` lists its lines, the first that matches applies; add or "
            "change one, `SELECT pg_reload_conf()`, then retry"
        )
    return None


def refused_connection(
    where: str,
    error: psycopg.Error,
    pool_size: int = 8,
    what: str = "a connection",
    *,
    database_url: str | None = None,
) -> DatabaseRefusedError | None:
    """:class:`DatabaseRefusedError` for a connection the server refused by the state of the
    app's role or database, or by its authentication, naming it and what resolves it;
    ``None`` for any other error. ``pool_size``: a replica's (`RemoteStore`'s, 8 unless
    given). ``database_url``: the URL connected to, to name where a refused password came
    from.

    A connection limit of the role's or the database's (red team 73 on the remote backend:
    under ``CONNECTION LIMIT 1`` for the app's role, a replica's holder took the one
    connection and its pool's were refused, said after 10 s as "pool initialization
    incomplete ... Check that the server runs", and the 53300 remedy named max_connections,
    which is not the limit reached); a role that may not log in (``ALTER ROLE ... NOLOGIN``
    under a live replica: its next new connection was "Check that the server runs and that
    database_url names it", both of which held; red team 73, left open, closed by 74)."""
    reason = str(error)
    if _UNANSWERED_REQUEST in reason:
        # No SQLSTATE, libpq's own: "Check that the server runs", which it did (red team 75
        # on this session's leftovers).
        return DatabasePasswordMissingError(
            where, _reason(error), "", _password_missing(database_url), what
        )
    authentication = _authentication_refused(database_url, error)
    if authentication is not None:
        return DatabaseRefusedError(where, _reason(error), *authentication, what)
    nologin = _NOT_PERMITTED_TO_LOG_IN.search(reason)
    if nologin is not None:
        name = nologin.group(1).replace('""', '"')
        # What the user runs, quoted in the message: not a statement this process sends.
        remedy = (
            f"The role {name} may not log in (NOLOGIN, as `ALTER ROLE ... NOLOGIN` sets it; "  # noqa: S608
            "the connections it opened before go on until they end): `SELECT rolname, "
            f"rolcanlogin FROM pg_roles WHERE rolname = {_sql_literal(name)}` shows it. As a "
            f"superuser or a role with CREATEROLE, `ALTER ROLE {_sql_identifier(name)} LOGIN` "
            "resolves it, or set database_url (APP_DATABASE_URL) to a role that may log in; "
            "then retry"
        )
        return DatabaseRefusedError(where, _reason(error), "28000", remedy, what)
    if _SERVER_FULL.search(reason):
        # Said as a server that does not run, "Check that the server runs and that
        # database_url names it", both of which held (red team 75 on serve --workers: the
        # workers of `serve --workers N` take two connections each at their start, and up
        # to one more each per request at once).
        # What the user runs, quoted in the message: not a statement this process sends.
        remedy = (
            "The database server is at its max_connections (less the slots it keeps for "  # noqa: S608
            "superusers): `SELECT usename, application_name, client_addr, count(*) FROM "
            "pg_stat_activity GROUP BY 1, 2, 3 ORDER BY 4 DESC` lists who holds them (each "
            "replica, and each worker of `app serve --workers N`, holds one for its lock and "
            f"up to {pool_size} in its pool, each `app` command one or two); end those that "
            "should not run, or serve with fewer workers or replicas, or raise max_connections "
            "(`ALTER SYSTEM SET max_connections = <n>` as a superuser, then restart "
            "PostgreSQL); then retry"
        )
        return DatabaseRefusedError(where, _reason(error), "53300", remedy, what)
    found = _CONNECTION_LIMIT.search(reason)
    if found is None:
        return None
    kind, name = found.group(1), found.group(2).replace('""', '"')
    column = "usename" if kind == "role" else "datname"
    # What the user runs, quoted in the message: not a statement this process sends.
    holders = (
        "SELECT pid, usename, datname, application_name, client_addr, backend_start FROM "  # noqa: S608
        f"pg_stat_activity WHERE {column} = {_sql_literal(name)}"
    )
    remedy = (
        f"The {kind} {name} is at its own connection limit (not the server's "
        f"max_connections): `{holders}` lists who holds its connections (each replica holds "
        f"one for its lock and up to {pool_size} in its pool, each `app` command one or two); "
        "end those that should not run, or raise the limit as a superuser: "
        f"`ALTER {kind.upper()} {_sql_identifier(name)} CONNECTION LIMIT <n>` (-1 for none), "
        "then retry"
    )
    return DatabaseRefusedError(where, _reason(error), "53300", remedy, what)


def refusal(
    where: str, error: psycopg.Error, what: str = "a statement"
) -> DatabaseRefusedError | None:
    """:class:`DatabaseRefusedError` for an error by which the server refused a statement,
    naming why and what resolves it; ``None`` for any other error."""
    state = error.sqlstate or ""
    remedy = (
        _row_security_elsewhere(error) or _raised_by_code(error) or refusal_remedy(state, where)
    )
    if remedy is None:
        return None
    return DatabaseRefusedError(where, _reason(error), state, remedy, what)


#: A frame of PL/pgSQL's in an error's ``CONTEXT``: a line of its own, that begins so. Its
#: function's name and argument types, each quoted (``"..."``, a quote doubled) where it is
#: not a plain identifier: a quoted name may hold a newline or a parenthesis, which ended
#: the frame inside it (``"f<newline>PL/pgSQL function app_audit_append_only"()`` was named
#: ``app_audit_append_only"()``; red team 71 on regress, round k).
_PLPGSQL_FRAME: Final = re.compile(
    r'^PL/pgSQL function ((?:"(?:[^"]|"")*"|[^"\n(])+\((?:"(?:[^"]|"")*"|[^"\n)])*\))', re.M
)
#: A frame's function named as one of the app's, in any schema: ``name()`` or, where the
#: search_path it was compiled under leaves its schema out, ``schema.name()``.
_APP_NAMED: Final = re.compile(r'(?:(?:"(?:[^"]|"")*"|[^"\s.(]+)\.)?(\w+)\(\)')


def _app_named(function: str) -> bool:
    named = _APP_NAMED.fullmatch(function)
    return named is not None and named.group(1) in _APP_FUNCTIONS


#: The app's guard of app_audit as an error's ``CONTEXT`` names it under the app's own
#: statements (the app's schema on their path: bare).
_AUDIT_GUARD: Final = "app_audit_append_only()"
#: What resolves the app's guard of app_audit refusing one of the app's own statements alone
#: (no other frame in its ``CONTEXT``): the app only ever inserts into app_audit, so something
#: of another's made a change of it there without code of its own. A rule made beside a live
#: replica (``ON INSERT TO app_audit DO ALSO DELETE ...``, an audit kept to 90 days; the
#: open refuses it, but not under a replica already open) made every audited operation a
#: bare ``RaiseException``, a 500 that named neither the rule nor what ends it, and said
#: nothing of what had been changed (red team 71 on regress, round k's *not stopped*; red
#: team 72 on the remote backend). A foreign key of another's whose action changes app_audit
#: reaches it the same way (its ``SQL statement`` line is no frame), as does a function in
#: another language (SQL, PL/Python), whose frame is not PL/pgSQL's. Its queries name no
#: schema and need none on the path: pasted into a session whose path leaves the app's schema
#: out (given in the URL's options; psql's own), ``current_schema()`` found no rule and
#: ``'app_audit'::regclass`` was an error (red team 72 on regress, round h).
#: They name the app's tables, not ``LIKE 'app\_%'``: that listed the rules of another
#: application's tables in any schema (Django names an app ``app``'s tables ``app_<model>``),
#: each with the ``DROP RULE`` said to resolve it, and under ``standard_conforming_strings``
#: off its ``\_`` was a bare ``_``, any character (red team 72 on regress, round j).
_APP_TABLES_LISTED: Final = ", ".join(f"'{table}'" for table in APP_TABLES)  # plain names
# A message's text to paste, never run by the app: the names in it are the app's own tables.
_REWRITTEN_INTO_AUDIT: Final = (
    "The app's guard of app_audit (its trigger app_audit_append_only, which keeps the audit "  # noqa: S608
    "append-only) refused a change to app_audit that the app never makes: it only inserts "
    "there. Something of another's on the app's tables made one of the app's statement: a "
    "rule (`SELECT schemaname, tablename, rulename, definition FROM pg_rules WHERE tablename "
    f"IN ({_APP_TABLES_LISTED})` lists them; `app doctor` names them, and each replica's "
    "start refuses them), or a foreign key of another's on app_audit whose ON DELETE or ON "
    "UPDATE action changes it (`SELECT conrelid::regclass, conname, pg_get_constraintdef(oid) "
    "FROM pg_constraint WHERE contype = 'f' AND conrelid IN (SELECT oid FROM pg_class WHERE "
    "relname = 'app_audit')`). As the owner of the app's tables, `DROP RULE <name> ON "
    "<schema>.<table>` or `ALTER TABLE <schema>.app_audit DROP CONSTRAINT <name>` resolves "
    "it; leave the app's trigger as it is. A function of another's in another language than "
    "PL/pgSQL that such a rule calls, or that a trigger of another's runs, is named in the "
    "reason's CONTEXT"
)


#: The app's guard's own words (`_SCHEMA`'s ``RAISE EXCEPTION``).
_GUARD_RAISED: Final = re.compile(r"app_audit is append-only: (?:UPDATE|DELETE|TRUNCATE) refused")


def _guard_alone(called: list[str], error: psycopg.Error) -> bool:
    """Whether the app's guard of app_audit alone raised ``error``, its frame naming its schema.

    PL/pgSQL names a function as the ``search_path`` it was first compiled under in a session
    showed it: under a rule of another's that calls a DBA's SQL function pinning its own path
    (``SET search_path = dba, pg_temp``, as PostgreSQL's docs advise for SECURITY DEFINER), the
    app's guard is ``public.app_audit_append_only()``, and was "code of another's", its remedy
    to disable the app's own trigger, the rule never named (red team 72 on regress, round h).
    A namesake of another's in another schema raising words of its own stays another's.
    """
    if len(called) != 1:
        return False
    named = _APP_NAMED.fullmatch(called[0])
    return (
        named is not None
        and named.group(1) == _AUDIT_GUARD.removesuffix("()")
        and _GUARD_RAISED.fullmatch(error.diag.message_primary or "") is not None
    )


#: A frame's function named without its schema and with no argument, as every trigger's and
#: event trigger's is: its name, quoted or not.
_UNQUALIFIED: Final = re.compile(r'("(?:[^"]|"")*"|[^"\s.(]+)\(\)')


def _function_is(function: str) -> str:
    """The condition on a function's oid that finds ``function``, a frame's name for it, in
    any session: one named without its schema, as the ``search_path`` it ran under showed it
    (a DBA's function that pins its own, ``SET search_path = dba, pg_temp``, is ``prune()``),
    is looked up by name in every schema, since ``'prune()'::regprocedure`` in a session
    whose path leaves ``dba`` out (psql's default) was an error, ``function "prune()" does
    not exist`` (red team 71 on regress, round k's *not stopped*; red team 72 on the remote
    backend); one named with its schema, or with arguments, is cast as it is printed."""
    plain = _UNQUALIFIED.fullmatch(function)
    if plain is None:
        return f"= {_literal(function)}::regprocedure"
    name = plain.group(1)
    if name.startswith('"'):
        name = name[1:-1].replace('""', '"')
    # A message's text to paste, never run by the app: the name is a literal (`_literal`).
    return f"IN (SELECT oid FROM pg_proc WHERE proname = {_literal(name)} AND pronargs = 0)"  # noqa: S608


def _raised_by_code(error: psycopg.Error) -> str | None:
    """What resolves a statement refused by code of another's that raised it (SQLSTATE class
    P0, PL/pgSQL's ``RAISE EXCEPTION``): an AFTER trigger on the app's tables (which the open
    lets be, as a DBA's audit or a freeze of writes for a migration) or an event trigger on
    the database's DDL (a guard against ``DROP``, which refuses `app data check --repair`'s
    rebuild of an index); ``None`` for any other error.

    Its message is the other code's own: the refusal was a bare ``RaiseException``, a 500
    and a traceback of `app data check --repair` that named neither the trigger nor what
    ends it, and said nothing of what had been changed (red team 71 on the remote backend).
    So is any error raised in such a function with a SQLSTATE of its own choosing
    (``RAISE ... USING ERRCODE = 'AB001'``) that no refusal of the app's has words for: its
    ``CONTEXT`` names a function that is not one of the app's.
    """
    state = error.sqlstate or ""
    # Each frame of the stack, innermost first, one a line: the function that raised it may
    # be the app's own, run by another's (``app_audit_append_only``, under a DBA's trigger
    # that prunes app_audit), whose caller is the code to name; a statement's text quoted
    # on a line of its own (``SQL statement "..."``) names no frame (red team 71 on regress).
    # A function's frame names it as its search_path then showed it: the app's, run by a
    # DBA's function that pins its own (``SET search_path = dba, pg_temp``, as PostgreSQL's
    # docs advise for SECURITY DEFINER), is ``public.app_audit_append_only()``, and was named
    # as another's, its remedy to disable the app's guard (red team 71 on regress, round k).
    # So a frame named as one of the app's, in any schema, is passed over for the one that
    # ran it; alone, one with a schema is another's (the app's own statements run with the
    # app's schema on their path: the app's function is named bare).
    called = [frame.group(1) for frame in _PLPGSQL_FRAME.finditer(error.diag.context or "")]
    frames = [function for function in called if not _app_named(function)]
    if not frames and (called == [_AUDIT_GUARD] or _guard_alone(called, error)):
        return _REWRITTEN_INTO_AUDIT
    if not frames and called and called[0].removesuffix("()") in _APP_FUNCTIONS:
        return None  # the app's own function alone: not another's code
    frames = frames or called
    if not (state.startswith("P0") or (frames and _refusal_text(state) is None)):
        return None
    function = frames[0] if frames else "<the function the reason's CONTEXT names>"
    found = _function_is(function)  # a message's statement, to paste as it is printed
    return (
        f"Code of another's raised it, in function {function}: a trigger on the app's tables "  # noqa: S608
        "(`SELECT tgrelid::regclass, tgname FROM pg_trigger WHERE NOT tgisinternal AND "
        f"tgfoid {found}` names it; `app doctor` lists those run before "
        "a row's change) or an event trigger on the database's DDL (`SELECT evtname, "
        f"evtevent, evttags FROM pg_event_trigger WHERE evtfoid {found}`). "
        "Its message is its owner's: retry once they allow it, or, as the owner of the app's "
        "tables or a superuser, `ALTER TABLE <table> DISABLE TRIGGER <name>` or `ALTER EVENT "
        "TRIGGER <name> DISABLE`"
    )


def _row_security_elsewhere(error: psycopg.Error) -> str | None:
    """What resolves a refusal by row security on a table that is not the app's, which only a
    trigger of another's on the app's tables (a DBA's audit, fed by an AFTER trigger as
    `TablesHookedError` advises) reaches, as the app's role: ``None`` for any other.

    The app's connections run with ``row_security`` off (`configure_session`), and with it
    off PostgreSQL refuses every statement a policy would apply to, the trigger's too: every
    upload was refused, and the remedy said that row security had been switched on for an
    app table and to disable it on the DBA's own table (red team 63 on regress). The setting
    given to that function alone keeps the policy inside it and the app's reads as they are.
    """
    if error.sqlstate != "42501":
        return None
    diag = error.diag
    found = re.search(r'row-level security policy for table "(.+)"', diag.message_primary or "")
    if found is None or found.group(1) in APP_TABLES:
        return None
    table = found.group(1)
    # PL/pgSQL's context names the function as its signature, innermost first; a function
    # in another language is named by the context's other lines.
    called = re.search(r"PL/pgSQL function (\S.*?\)) line \d+", diag.context or "")
    function = called.group(1) if called else "<the function the reason's CONTEXT names>"
    return (
        f"Row security applies to the app's role on table {table}, which is not one of the "
        "app's: a trigger of another's on the app's tables reaches it as that role, through "
        f"function {function}. The app's connections run with row_security off, so that no "
        "read of an app table returns some of its rows as all of them, and with it off "
        "PostgreSQL refuses every statement a policy would apply to, that function's too. As "
        f"that function's owner, `ALTER FUNCTION {function} SET row_security = on` has the "
        f"policies of {table} apply inside it as before and leaves the app's reads as they "
        f"are (or make it SECURITY DEFINER, owned by the owner of {table}); row security on "
        f"{table} stays on"
    )


def _refusal_text(state: str) -> str | None:
    return _REFUSALS.get(state) or _REFUSALS.get(state[:2])


def refusal_remedy(state: str, where: str) -> str | None:
    """What resolves a refusal with SQLSTATE ``state`` of database ``where`` (masked)."""
    remedy = _refusal_text(state)
    if remedy is None:
        return None
    dbname = where.rpartition("/")[2]  # mask_url's form
    return remedy.format(dbname=dbname) + from_pgoptions(
        pgoptions_setting(*_SETTINGS_OF.get(state, ()))
    )


# The session settings a refusal's remedy is about, by SQLSTATE.
_SETTINGS_OF = {
    "25006": ("default_transaction_read_only", "transaction_read_only"),
    "25P03": ("idle_in_transaction_session_timeout",),
    "57014": ("statement_timeout",),
    "42501": ("session_replication_role",),
}


def pgoptions_setting(*settings: str) -> str:
    """libpq's ``PGOPTIONS`` from this process's environment when it sets one of
    ``settings`` (it is sent with every connection whose URL gives no ``options``), else
    ``""``: a refusal then names it, not only the database's and the role's settings."""
    options = os.environ.get("PGOPTIONS", "")
    names = "|".join(re.escape(name) for name in settings)
    if not names or not re.search(rf"(?<![\w.])({names})(?!\w)", options):
        return ""
    return options


@contextlib.contextmanager
def refusals(where: str, what: str = "a statement") -> Iterator[None]:
    """Raise the server's refusals of a statement as :class:`DatabaseRefusedError`."""
    try:
        yield
    except WaitTimeoutError as error:
        raise DatabaseTimeoutError(where, _reason(error), error.seconds, what) from None
    except psycopg.Error as error:
        refused = refusal(where, error, what)
        if refused is None:
            raise
        raise refused from None


#: ``synchronous_commit`` made ``on`` for the rest of the transaction where it is ``off`` or
#: ``local`` (kept where it is stronger), as the last statement before a COMMIT: see
#: ``app.remote.db._DURABLE``, which each replica's write runs at its commit point.
DURABLE: Final = (
    "set_config('synchronous_commit', CASE current_setting('synchronous_commit')"
    " WHEN 'off' THEN 'on' WHEN 'local' THEN 'on'"
    " ELSE current_setting('synchronous_commit') END, true) AS durable"
)


#: Fires every trigger deferred to the commit (``DEFERRABLE INITIALLY DEFERRED``) now,
#: and any the statements after it queue as they end: the statement each write runs at its
#: commit point before `DURABLE`, so that no code of another's runs between the setting and
#: the COMMIT. A constraint trigger of another's deferred to the commit that says ``SET
#: LOCAL synchronous_commit = off`` ran after the setting, at the COMMIT, and a session's
#: delete committed with ``off``, answered before its WAL was written (rt-regress65b's *not
#: stopped*; session 66). Not with each ``BEGIN``: a deferred trigger still runs once every
#: statement of the change is done, as it would at the COMMIT, and sees what the COMMIT
#: would. Its error is the write's refusal, the transaction rolled back, as at the COMMIT.
#: The app's own constraints are none of them deferrable, and a deferrable one of
#: another's on the app's tables is refused by the open (`drift`); a create and an upload
#: fire them earlier already, to read their rows back as stored.
FIRE_DEFERRED: Final = "SET CONSTRAINTS ALL IMMEDIATE"


@contextlib.contextmanager
def committed(conn: psycopg.Connection[Any], where: str, what: str) -> Iterator[None]:
    """``conn.transaction()``, under :func:`refusals`, whose COMMIT that got no answer within
    the connection's bound is :class:`CommitUnknownError`: the server may have committed it
    before it stopped answering, so "nothing was changed" would not be known.

    Committed with ``synchronous_commit`` on (`DURABLE`, set after the body's statements):
    a re-stamp, an open that makes or upgrades the schema, a prefix forgotten set it only as
    their connection opened (`configure_session`), and a trigger of another's on the app's
    tables that says ``SET LOCAL synchronous_commit = off`` (a logging tool's on
    ``app_audit``) made them commit with ``off``, as red team 65 on regress found of the
    replicas' writes: "is now stamped", then lost by a crash of the server (red team 65 on
    regress, rt-regress65c)."""
    committing = False
    with refusals(where, what):
        try:
            with conn.transaction():
                yield
                # Every trigger deferred to the commit first (`FIRE_DEFERRED`): one that says
                # `SET LOCAL synchronous_commit = off` ran after the setting (session 66).
                conn.execute(f"{FIRE_DEFERRED}; SELECT {DURABLE}".encode())
                committing = True
        except WaitTimeoutError as error:
            if not committing:
                raise
            raise CommitUnknownError(where, _reason(error), what) from None


# --- the stamp and the schema -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stamp:
    """What ``app_stamp`` says: which profile the database belongs to, and since when."""

    profile: str
    schema_version: int
    created: datetime
    restamped_from: str | None = None
    database_id: str | None = None
    """The database's own id, which its object prefix's stamp records (:func:`open_database`
    with ``objects``)."""
    instance: str | None = None
    """Which database this is, as no copy of its rows can say (:func:`instance`)."""
    timeline: int | None = None
    """The server's timeline (:func:`timeline`), which a promotion advances."""
    named: tuple[str, ...] = ()
    """A few of the objects its rows name (:func:`named_objects`): a prefix that has none
    of them and no stamp lost them, or is another store's."""
    bound_now: bool = False
    """Whether this open recorded the prefix (:func:`unbind` undoes it)."""


def foreign_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """The tables, views and foreign tables of the database, outside PostgreSQL's own
    schemas: on a database without the app's stamp, what makes it not the app's to adopt.

    Not those of an extension (``pg_stat_statements``' views, PostGIS's
    ``spatial_ref_sys``), which a DBA installs in every database, often in ``template1`` so
    that every new one has them: a new database was refused as holding "things that are not
    the app's", and the remedy, "a new or empty one", had them too (red team 49).
    """
    rows = conn.execute(
        """
        SELECT n.nspname || '.' || c.relname FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
          AND NOT EXISTS (
            SELECT 1 FROM pg_depend d
            WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
          )
        ORDER BY 1
        """
    ).fetchall()
    return [row[0] for row in rows]


def app_schema(conn: psycopg.Connection[Any]) -> str | None:
    """The schema of the app's tables, as this connection's ``search_path`` finds its
    stamp; ``None`` for a database the app never opened.

    Raises:
        TablesOffSearchPathError: the stamp is in a schema the ``search_path`` leaves out
            (``ALTER DATABASE ... SET search_path``, the role's, or ``options`` in the URL;
            red team 37: such a database was refused as "not empty and has no profile
            stamp", with the advice to point database_url at a new one).
        TablesShadowedError: a stamp in two schemas on the ``search_path``.
    """
    # Tuples whatever the connection's row factory (the pool's gives dicts).
    cursor = conn.cursor(row_factory=tuple_row)
    on_path = cursor.execute(
        "SELECT n.nspname, current_setting('search_path') FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN unnest(current_schemas(false)) WITH ORDINALITY AS p(name, place)"
        " ON p.name = n.nspname"
        " WHERE c.relname = 'app_stamp' AND c.relkind IN ('r', 'p') ORDER BY p.place"
    ).fetchall()
    if len(on_path) > 1:
        # A copy of the tables on the path (a schema named after the role is on it by
        # default, '"$user"'): the first was read as the app's, and `check --repair` deleted
        # every object only the other one named (red team 38).
        info = conn.info
        where = f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"
        raise TablesShadowedError(where, [r[0] for r in on_path], str(on_path[0][1]))
    if on_path:
        return str(on_path[0][0])
    elsewhere = cursor.execute(
        "SELECT n.nspname, current_setting('search_path'), current_schema() FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relname = 'app_stamp' AND c.relkind IN ('r', 'p') ORDER BY 1"
    ).fetchall()
    if not elsewhere:
        return None
    info = conn.info
    where = f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"
    raise TablesOffSearchPathError(
        where,
        [r[0] for r in elsewhere],
        str(elsewhere[0][1]),
        pgoptions=pgoptions_setting("search_path"),
        current=elsewhere[0][2],
    )


def pin_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    """Keep ``conn`` on the app's schema, whatever ``search_path`` the database or the role
    is given later: a pooled connection opened after an ``ALTER DATABASE ... SET
    search_path`` found no table of the app's (a bare ``UndefinedTable``, a 500; red team
    37). ``pg_catalog`` is searched first all the same."""
    conn.execute("SELECT set_config('search_path', quote_ident(%s), false)", (schema,))


def _pin_found_schema(conn: psycopg.Connection[Any]) -> None:
    """Keep a connection the app's code opens itself (a command's, a maintenance hold, the
    holder's) on the schema its stamp is in, as the pool keeps its own (red team 38: only
    the pool's were, so a table of the app's name in a schema earlier on the path took the
    rows of an audit or a holder). A stamp off the path is left to :func:`read_stamp`,
    which each caller reports in its own way."""
    with contextlib.suppress(TablesOffSearchPathError):
        schema = app_schema(conn)
        if schema is not None:
            pin_schema(conn, schema)


#: The app's UNLOGGED tables and sequences (each with the table that owns it) in the
#: connection's current schema, given ``%(tables)s`` (:data:`APP_TABLES`): :func:`unlogged`'s,
#: and a write's check at its commit point (``app.remote.db``).
UNLOGGED_FROM: Final = (
    "FROM pg_class c"
    " LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid"
    "  AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')"
    " LEFT JOIN pg_class owner ON owner.oid = d.refobjid"
    # Found through pg_class's and pg_depend's indexes, from the app's table names, rather
    # than by reading every row of pg_class for `relpersistence`, which no index has: each
    # write runs this (red team 64, regress: a database of 20,000 relations, other schemas'
    # tables and their indexes, made each write 1.7 ms slower, and a write's cost grew with
    # every table anyone made in the database).
    " WHERE c.oid IN (SELECT t.oid FROM pg_class t WHERE t.relname = ANY(%(tables)s)"
    "  UNION ALL SELECT s.objid FROM pg_class t JOIN pg_depend s"
    "  ON s.refclassid = 'pg_class'::regclass AND s.refobjid = t.oid"
    "  AND s.classid = 'pg_class'::regclass AND s.deptype IN ('a', 'i')"
    "  WHERE t.relname = ANY(%(tables)s))"
    " AND c.relnamespace"
    "  = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
    "  AND c.relpersistence = 'u' AND c.relkind IN ('r', 'p', 'S')"
    "  AND (c.relname = ANY(%(tables)s) OR owner.relname = ANY(%(tables)s))"
)


def unlogged(conn: psycopg.Connection[Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The app's tables in its schema (the connection's current one) that are UNLOGGED, in
    :data:`APP_TABLES`' order, and its UNLOGGED sequences whose table is logged.

    PostgreSQL writes no WAL for an UNLOGGED table (``ALTER TABLE ... SET UNLOGGED``, the
    advice for a quick bulk load or restore) and empties it as it starts after a crash: the
    app opened such a database and acknowledged every write, and after ``pg_ctl stop -m
    immediate`` (or a power cut) every session was gone, the next open refused as a stamp
    "deleted by hand" (red team 62). A standby and a restore of a base backup have none of
    their rows either. An UNLOGGED sequence (PostgreSQL 15) starts again after a crash, and
    its table's next insert meets the rows it numbered.
    """
    rows = (
        conn.cursor(row_factory=tuple_row)
        .execute(
            f"SELECT c.relname, c.relkind = 'S', owner.relname {UNLOGGED_FROM}",
            {"tables": list(APP_TABLES)},
        )
        .fetchall()
    )
    tables = {str(name) for name, sequence, _ in rows if not sequence}
    sequences = sorted(
        str(name) for name, sequence, owner in rows if sequence and owner not in tables
    )
    return tuple(t for t in APP_TABLES if t in tables), tuple(sequences)


# tgtype's bits (PostgreSQL's pg_trigger.h): for each row, before, instead of; the events.
_ROW, _BEFORE, _INSTEAD = 1, 2, 64
_EVENTS = {"INSERT": 4, "DELETE": 8, "UPDATE": 16, "TRUNCATE": 32}


def _app_triggers() -> dict[tuple[str, str], tuple[int, str, str]]:
    """The app's own triggers, by (table, trigger): their ``tgtype``, their function's name
    and the statement that makes them, as `_SCHEMA` has them."""
    found = {}
    for made in re.finditer(
        r"^CREATE TRIGGER (\w+) (BEFORE|AFTER) (.*?) ON (\w+)\s+FOR EACH (ROW|STATEMENT)"
        r" EXECUTE FUNCTION (\w+)\(\);",
        _SCHEMA,
        re.M | re.S,
    ):
        name, timing, events, table, level, function = made.groups()
        kind = (_ROW if level == "ROW" else 0) | (_BEFORE if timing == "BEFORE" else 0)
        kind |= sum(bit for word, bit in _EVENTS.items() if re.search(rf"\b{word}\b", events))
        found[(table, name)] = (kind, function, " ".join(made.group(0).split()).rstrip(";"))
    return found


#: The app's own triggers: (table, trigger) -> (tgtype, function, the statement making it).
_APP_TRIGGERS: Final = _app_triggers()
#: The app's trigger functions: name -> (their body, ``prosrc``, its words on one line; the
#: statement that makes them again, on one line, which plpgsql takes).
_APP_FUNCTIONS: Final = {
    made.group(1): (
        " ".join(made.group(2).split()),
        " ".join(made.group(0).split()).replace("CREATE", "CREATE OR REPLACE", 1).rstrip(";"),
    )
    for made in re.finditer(
        r"^CREATE FUNCTION (\w+)\(\) RETURNS trigger LANGUAGE plpgsql AS \$\$(.*?)\$\$;",
        _SCHEMA,
        re.M | re.S,
    )
}


def hooks(conn: psycopg.Connection[Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What on the app's tables (in the connection's current schema) can skip or change its
    writes, as PostgreSQL defines it, and the statements that undo each: a trigger of
    another's run BEFORE or INSTEAD OF each row's change, a rule, and the app's own triggers
    switched off (``DISABLE TRIGGER``, or ``ENABLE REPLICA``, which the app's ``origin``
    sessions never fire).

    Red team 62: a trigger ``BEFORE INSERT ON app_files ... RETURN NULL`` skipped every
    upload's row, and each upload was answered 201 with its digest, then 404: the bytes were
    gone. A rule ``ON UPDATE TO app_sessions DO INSTEAD NOTHING`` made every delete a bare
    ``FeatureNotSupported`` (500). Triggers after the change (a CDC tool's), and of each
    statement, are left alone: they cannot skip a row.

    Row security that applies to this connection's role (``ENABLE`` and, for the tables'
    owner, ``FORCE ROW LEVEL SECURITY``, as a hardening script or a hosted database's advice
    sets it on every table): its reads see only the rows a policy shows, none where no policy
    is (red team 62 on regress: `app data check --repair` took every upload's object for an
    orphan and deleted it, bytes the app had acknowledged). :func:`configure_session` turns
    ``row_security`` off, so that a query it would filter fails instead, under a live replica
    too; this names it at the open.
    """
    cursor = conn.cursor(row_factory=tuple_row)
    secured = cursor.execute(
        "SELECT c.relname FROM pg_class c WHERE c.relname = ANY(%s) AND c.relnamespace"
        "  = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
        " AND row_security_active(c.oid) ORDER BY 1",
        (list(APP_TABLES),),
    ).fetchall()
    triggers = cursor.execute(
        "SELECT c.relname, t.tgname, t.tgtype, t.tgenabled::text, pg_get_triggerdef(t.oid),"
        " p.proname, p.prosrc FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " JOIN pg_proc p ON p.oid = t.tgfoid WHERE NOT t.tgisinternal"
        " AND c.relname = ANY(%s) AND c.relnamespace"
        "  = (SELECT oid FROM pg_namespace WHERE nspname = current_schema()) ORDER BY 1, 2",
        (list(APP_TABLES),),
    ).fetchall()
    rules = cursor.execute(
        "SELECT c.relname, r.rulename, pg_get_ruledef(r.oid) FROM pg_rewrite r"
        " JOIN pg_class c ON c.oid = r.ev_class WHERE c.relname = ANY(%s) AND c.relnamespace"
        "  = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
        " AND r.ev_enabled <> 'D' ORDER BY 1, 2",
        (list(APP_TABLES),),
    ).fetchall()
    found: list[str] = []
    undo: list[str] = []
    for table, name in sorted(set(_APP_TRIGGERS) - {(t[0], t[1]) for t in triggers}):
        # Dropped (red team 62 on regress: the open took it, the count drifting for good).
        found.append(f"the app's trigger {name} on {table} is gone")
        undo.append(_APP_TRIGGERS[(table, name)][2])
    for table, name, kind, enabled, definition, function, body in triggers:
        fires = enabled in ("O", "A")
        app = _APP_TRIGGERS.get((table, name))
        if app is not None and (kind, function) != app[:2]:
            # Another's under the app's name (red team 62 on regress: one run before each
            # insert, returning NULL, was taken for the app's own).
            found.append(f"{definition}, made in place of the app's")
            undo.append(f'DROP TRIGGER "{name}" ON "{table}"; {app[2]}')
        elif app is not None:
            if " ".join(str(body).split()) != _APP_FUNCTIONS[function][0]:
                # Its function replaced (CREATE OR REPLACE FUNCTION): the same class.
                found.append(f"the function {function}() of the app's trigger {name} was replaced")
                undo.append(_APP_FUNCTIONS[function][1])
            if not fires:
                found.append(f"the app's trigger {name} on {table} is off")
                undo.append(f'ALTER TABLE "{table}" ENABLE TRIGGER "{name}"')
        elif fires and kind & _ROW and kind & (_BEFORE | _INSTEAD):
            found.append(str(definition))
            undo.append(f'DROP TRIGGER "{name}" ON "{table}"')
    for table, name, definition in rules:
        found.append(" ".join(str(definition).split()).rstrip(";"))
        undo.append(f'DROP RULE "{name}" ON "{table}"')
    for (table,) in secured:
        found.append(f"row level security on {table}, which role {conn.info.user} is subject to")
        undo.append(f'ALTER TABLE "{table}" DISABLE ROW LEVEL SECURITY')
    return tuple(found), tuple(undo)


# The app's tables as `_SCHEMA` makes them, as PostgreSQL's catalog shows them (every open
# of a new database compares them, so a change to `_SCHEMA` without one here is refused at
# once): each column's type (`!`: NOT NULL; text columns take the database's default
# collation), each constraint, and each unique index that backs none.
_APP_COLUMNS: Final = {
    "app_stamp": "id integer!, profile text!, schema_version integer!, created timestamptz!,"
    " restamped_from text, content_sha256_since timestamptz",
    "app_holders": "id integer!, host text!, pid integer!, profile text!, since timestamptz!,"
    " url text, backend_pid integer!",
    "app_audit": "id bigint!, at timestamptz!, profile text!, kind text!, operation text!,"
    " target text!, detail jsonb!, host text!, pid integer!",
    "app_sessions": "id text!, title text!, metadata json!, created_at timestamptz!,"
    " updated_at timestamptz!, deleted_at timestamptz, deleted_reason text, trash_name text,"
    " content_sha256 text, updated_sha256 text",
    "app_files": "id bigint!, session_id text!, name text!, blob text!, size bigint!,"
    " sha256 text!, uploaded_at timestamptz!, deleted_at timestamptz, deleted_reason text,"
    " trash_name text, content_sha256 text",
    "app_session_counts": "slot integer!, live bigint!",
    "app_binding": "id integer!, database_id uuid!, bucket text!, prefix text!, bound timestamptz!",
}
_PAIRED = "CHECK (((deleted_at IS NULL) = (trash_name IS NULL)))"
_APP_CONSTRAINTS: Final = {
    ("app_audit", "app_audit_pkey"): "PRIMARY KEY (id)",
    ("app_binding", "app_binding_id_check"): "CHECK ((id = 1))",
    ("app_binding", "app_binding_pkey"): "PRIMARY KEY (id)",
    ("app_files", "app_files_blob_key"): "UNIQUE (blob)",
    ("app_files", "app_files_check"): _PAIRED,
    ("app_files", "app_files_pkey"): "PRIMARY KEY (id)",
    ("app_files", "app_files_session_id_fkey"): "FOREIGN KEY (session_id) REFERENCES"
    " app_sessions(id)",
    ("app_files", "app_files_trash_name_key"): "UNIQUE (trash_name)",
    ("app_holders", "app_holders_pkey"): "PRIMARY KEY (id)",
    ("app_session_counts", "app_session_counts_pkey"): "PRIMARY KEY (slot)",
    ("app_sessions", "app_sessions_check"): _PAIRED,
    ("app_sessions", "app_sessions_id_check"): "CHECK ((id ~ '^[0-9a-f]{32}$'::text))",
    ("app_sessions", "app_sessions_pkey"): "PRIMARY KEY (id)",
    ("app_sessions", "app_sessions_trash_name_key"): "UNIQUE (trash_name)",
    ("app_stamp", "app_stamp_id_check"): "CHECK ((id = 1))",
    ("app_stamp", "app_stamp_pkey"): "PRIMARY KEY (id)",
}
_APP_UNIQUE_INDEXES: Final = {
    ("app_files", "app_files_live"): "CREATE UNIQUE INDEX app_files_live ON app_files USING"
    " btree (session_id, name) WHERE (deleted_at IS NULL)",
}


def _app_columns(table: str) -> dict[str, tuple[str, bool]]:
    columns = {}
    for column in _APP_COLUMNS[table].split(", "):
        name, kind = column.split(" ", 1)
        kind = kind.replace("timestamptz", "timestamp with time zone")
        columns[name] = (kind.rstrip("!"), kind.endswith("!"))
    return columns


def drift(conn: psycopg.Connection[Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """How the app's tables (in the connection's current schema) differ from the ones the
    app made, and the statements that undo each: a column dropped, or its type or ``NOT
    NULL`` changed, or its collation made nondeterministic (two names that differ, as
    ``A.txt`` and ``a.txt``, compare equal); a column of another's that every insert of the
    app's must fill (``NOT NULL``, no default); a constraint of the app's dropped or changed,
    or one of another's added (a ``CHECK`` as a quota, ``UNIQUE``, a foreign key; ``NOT
    VALID`` ones too: each checks every new row); a unique index of the app's dropped or
    ``INVALID`` (a failed ``REINDEX CONCURRENTLY``), or one of another's; a sequence behind
    its table's largest id.

    Red team 63: ``ALTER TABLE app_sessions ALTER COLUMN metadata TYPE jsonb`` (the usual
    advice: jsonb can be indexed) stored each session's metadata otherwise than its create
    answered (its keys reordered, ``1e300`` read back as an integer), and one holding
    ``\\u0000`` was a bare ``UntranslatableCharacter`` (500); a ``CHECK`` on
    ``app_files.size``, a ``varchar(8)`` name, a dropped column and a renamed schema made
    the writes they touch bare psycopg errors (500, a traceback on the command line); the
    name column given a case-insensitive collation had a ``PUT`` of ``a.txt`` replace the
    acknowledged ``A.txt``; and the next open said nothing of any of them. A column of
    another's that may be left empty, and an index that is not unique (a DBA's, for a
    report), are left alone.
    """
    printed_plainly(conn)
    cursor = conn.cursor(row_factory=tuple_row)
    out: _Found = ([], [])
    present = _column_drift(cursor, out)
    _constraint_drift(cursor, present, out)
    _index_drift(cursor, present, out)
    _sequence_drift(conn, present, out)
    return tuple(out[0]), tuple(out[1])


#: What :func:`drift` found, in words, and the statements that undo each, in order.
_Found = tuple[list[str], list[str]]
_IN_SCHEMA = (
    " c.relname = ANY(%s) AND c.relnamespace"
    " = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
)


#: The app's tables whose ``id`` a sequence numbers (``serial``, ``bigserial``).
_NUMBERED: Final = ("app_holders", "app_audit", "app_files")


def _sequence_drift(conn: psycopg.Connection[Any], present: set[str], out: _Found) -> None:
    """A sequence behind its table's largest id: logical replication copies rows, never
    sequences, and a data-only restore (``COPY``) leaves them too; each insert of the app's
    then meets a row the copy numbered (red team 63: every upload and every audited change
    refused on ``app_files_pkey`` or ``app_audit_pkey``, until as many had failed)."""
    found, undo = out
    tables = [table for table in _NUMBERED if table in present]
    if not tables:
        return
    rows = (
        conn.cursor(row_factory=tuple_row)
        .execute(
            sql.SQL(" UNION ALL ").join(
                sql.SQL(
                    "SELECT {name}, s.seq, coalesce(pg_sequence_last_value(s.seq::regclass),"
                    " (SELECT seqstart - seqincrement FROM pg_sequence"
                    " WHERE seqrelid = s.seq::regclass)), (SELECT max(id) FROM {table})"
                    " FROM (SELECT pg_get_serial_sequence({quoted}, 'id') AS seq) s"
                    # A role that may not read the sequence (one that only reads the
                    # tables) cannot insert either: nothing of its is refused for it.
                    " WHERE s.seq IS NOT NULL"
                    " AND has_sequence_privilege(s.seq, 'SELECT, USAGE')"
                ).format(
                    name=sql.Literal(table),
                    table=sql.Identifier(table),
                    quoted=sql.Literal(f'"{table}"'),
                )
                for table in tables
            )
        )
        .fetchall()
    )
    for table, sequence, last, largest in rows:
        if largest is not None and last is not None and last < largest:
            found.append(
                f"sequence {sequence} is at {last}, behind {table}'s largest id {largest} "
                "(logical replication copies no sequence, nor does a data-only restore): "
                "each insert of the app's there meets a row already numbered"
            )
            setval = f"SELECT setval('{sequence}', (SELECT max(id) FROM \"{table}\"))"  # noqa: S608
            undo.append(setval)


def _column_drift(cursor: psycopg.Cursor[Any], out: _Found) -> set[str]:
    found, undo = out
    rows = cursor.execute(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,"  # noqa: S608
        " a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '', coalesce(co.collname,"
        " '') FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid LEFT JOIN"
        " pg_collation co ON co.oid = a.attcollation AND NOT co.collisdeterministic"
        " WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p') AND"
        + _IN_SCHEMA + " ORDER BY c.relname, a.attnum",
        (list(APP_TABLES),),
    ).fetchall()  # fmt: skip
    present: dict[str, dict[str, tuple[str, bool, bool, str]]] = {}
    for table, column, kind, not_null, filled, collation in rows:
        present.setdefault(table, {})[column] = (kind, not_null, filled, collation)
    for table in APP_TABLES:
        if table not in present:
            continue  # dropped: no statement of the app's on it runs (42P01's remedy)
        app, there = _app_columns(table), present[table]
        for column, (kind, not_null) in app.items():
            alter = f'ALTER TABLE "{table}" ALTER COLUMN "{column}"'
            if column not in there:
                found.append(f"column {table}.{column} is gone")
                undo.append(f'ALTER TABLE "{table}" ADD COLUMN "{column}" {kind}')
                continue
            now, now_not_null, _, collation = there[column]
            if now != kind or collation:
                nondeterministic = " (nondeterministic: names that differ compare equal)"
                how = now + (f' COLLATE "{collation}"{nondeterministic}' if collation else "")
                found.append(f"column {table}.{column} is {how}, the app's is {kind}")
                collate = ' COLLATE "default"' if kind == "text" else ""
                undo.append(f'{alter} TYPE {kind}{collate} USING "{column}"::{kind}')
            if now_not_null != not_null:
                how = "NOT NULL" if now_not_null else "nullable"
                found.append(f"column {table}.{column} is {how}, the app's is not")
                undo.append(f"{alter} {'DROP' if now_not_null else 'SET'} NOT NULL")
        for column, (_, not_null, filled, _) in there.items():
            if column not in app and not_null and not filled:
                found.append(
                    f"column {table}.{column}, not the app's, is NOT NULL with no default "
                    "(no insert of the app's fills it)"
                )
                undo.append(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" DROP NOT NULL')
    return set(present)


def _constraint_drift(cursor: psycopg.Cursor[Any], present: set[str], out: _Found) -> None:
    found, undo = out
    rows = cursor.execute(
        "SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k"  # noqa: S608
        " JOIN pg_class c ON c.oid = k.conrelid WHERE k.contype IN ('c', 'f', 'p', 'u', 'x')"
        " AND" + _IN_SCHEMA + " ORDER BY 1, 2",
        (list(APP_TABLES),),
    ).fetchall()
    seen = set()
    for table, name, definition in rows:
        app = _APP_CONSTRAINTS.get((table, name))
        seen.add((table, name))
        if app != definition:
            found.append(f"constraint {name} on {table} is not the app's: {definition}")
            drop = f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"'
            undo.append(drop + ("" if app is None else f'; ALTER TABLE "{table}" ADD '
                                f'CONSTRAINT "{name}" {app}'))  # fmt: skip
    for (table, name), definition in _APP_CONSTRAINTS.items():
        if table in present and (table, name) not in seen:
            found.append(f"the app's constraint {name} on {table} ({definition}) is gone")
            undo.append(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}')


def _index_drift(cursor: psycopg.Cursor[Any], present: set[str], out: _Found) -> None:
    found, undo = out
    # Unique indexes that back no constraint (the constraints' are compared above).
    rows = cursor.execute(
        "SELECT c.relname, i.relname, pg_get_indexdef(x.indexrelid),"  # noqa: S608
        " x.indisvalid AND x.indisready FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid"
        " JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indisunique AND NOT EXISTS"
        " (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid AND k.conrelid"
        " = x.indrelid) AND" + _IN_SCHEMA + " ORDER BY 1, 2",
        (list(APP_TABLES),),
    ).fetchall()
    seen = set()
    for table, name, definition, usable in rows:
        app = _APP_UNIQUE_INDEXES.get((table, name))
        shown = unqualified(str(definition))
        seen.add((table, name))
        if app is None:
            found.append(f"a unique index not the app's: {shown}")
            undo.append(f'DROP INDEX "{name}"')
        elif shown != app:
            found.append(f"the app's index {name} is now {shown}")
            undo.append(f'DROP INDEX "{name}"; {app}')
        elif not usable:
            found.append(
                f"the app's index {name} is INVALID (a failed CREATE INDEX or REINDEX CONCURRENTLY)"
            )
            undo.append(f'REINDEX INDEX "{name}"')
    for (table, name), app in _APP_UNIQUE_INDEXES.items():
        if table in present and (table, name) not in seen:
            found.append(f"the app's unique index {name} on {table} is gone")
            undo.append(app)


def stored(
    cursor: psycopg.Cursor[Any], where: str, what: str, table: str, statement: str = "INSERT into"
) -> None:
    """Refuse a write whose INSERT into ``table`` (or UPDATE of a row it knows is there)
    wrote no row (a trigger that returned NULL before it, a rule DO INSTEAD): the app would
    answer for a row that is not there, an upload's 201 for bytes then deleted as no row's, a
    restore as done that was not (red team 62). Raising rolls back the write's transaction,
    and an upload's object is deleted as for any refused record."""
    if cursor.rowcount != 1:
        raise WriteNotStoredError(where, what, table, statement)


def skipped(conn: psycopg.Connection[Any], where: str, what: str, table: str, key: str,
            values: tuple[Any, ...]) -> None:  # fmt: skip
    """After an UPDATE of a live row of ``table`` (``key``, a condition on ``values``) that
    returned none: refuse it as skipped where that row is there all the same, rather than
    say it is not (red team 62: a trigger that skipped a delete had it refused as "has no
    file"). ``key`` is the app's own text, never a caller's value."""
    found = conn.execute(
        sql.SQL("SELECT 1 FROM {} WHERE {} AND deleted_at IS NULL").format(
            sql.Identifier(table), sql.SQL(key)
        ),
        values,
    ).fetchone()
    if found is not None:
        raise WriteNotStoredError(where, what, table, "UPDATE of")


def trashed(
    conn: psycopg.Connection[Any],
    where: str,
    what: str,
    table: str,
    ids: list[Any],
    moment: datetime,
    *,
    files: int | None = None,
) -> None:
    """After an UPDATE that moved rows ``ids`` of ``table`` to the trash at ``moment``,
    once every trigger has run (the deferred ones fired: at the commit point, `Database.write`'s
    ``settled``, or by the caller): refuse it, rolled back, where they are not all there
    so, or (``files``, for sessions) where their live file rows (those their entries hold)
    are no longer the ``files`` counted before the update. Their versions already in the
    trash are not counted: they are entries of their own, which an empty-trash of another
    replica deletes without the session's lock, and a delete counted with them was refused
    as one a trigger undid (red team 69 on regress, b).

    A trigger of another's after the update (the kind the open leaves alone: an archiving
    tool's that moves a trashed row, or a trashed session's files, into a table of its own,
    at once or deferred to the commit) took the rows away: a replace was answered 200 and a
    delete with its trash entry, both audited, of versions no entry held, whose objects `app
    data check --repair` then deleted as no row's (red team 69 on integrity). ``ids`` are
    the app's own row ids, never a caller's text; none (an upload of a new name, a purge of
    no session) asks nothing."""
    if not ids:
        return
    found = conn.execute(
        sql.SQL(
            "SELECT (SELECT count(*) FROM {} WHERE id = ANY(%s) AND deleted_at = %s) AS n,"
            " (SELECT count(*) FROM app_files WHERE session_id = ANY(%s)"
            " AND deleted_at IS NULL) AS files"
        ).format(sql.Identifier(table)),
        (ids, moment, ids if files is not None else []),
    ).fetchone()
    if found is None or found["n"] != len(ids):
        raise WriteNotStoredError(where, what, table, "UPDATE of", after=True)
    if files is not None and found["files"] != files:
        counted = (files, found["files"])
        raise WriteNotStoredError(where, what, table, "UPDATE of", after=True, files=counted)


def kept(conn: psycopg.Connection[Any], where: str, what: str, table: str, ids: set[Any]) -> None:
    """After UPDATEs of rows ``ids`` of ``table`` that change none of what a trigger's
    ``WHEN`` would tell apart (a repair's keys), once every trigger has run: refuse them,
    rolled back, where a row is gone. A trigger of another's after any update of a trashed
    row (an archiving tool's, "whenever a trashed row is touched") took trashed rows away as
    the repair keyed them, and the next repair deleted their objects as no row's (red team
    69 on integrity)."""
    if not ids:
        return
    found = conn.execute(
        sql.SQL("SELECT count(*) AS n FROM {} WHERE id = ANY(%s)").format(sql.Identifier(table)),
        (list(ids),),
    ).fetchone()
    if found is None or found["n"] != len(ids):
        raise WriteNotStoredError(where, what, table, "UPDATE of", after=True)


def read_stamp(conn: psycopg.Connection[Any]) -> Stamp | None:
    """The stamp, or ``None`` for a database the app never opened.

    Raises:
        TablesOffSearchPathError: see :func:`app_schema`.
    """
    if app_schema(conn) is None:
        return None
    row = conn.execute(
        "SELECT profile, schema_version, created, restamped_from FROM app_stamp"
    ).fetchone()
    return Stamp(*row) if row else None


def open_database(
    database_url: str,
    profile: str,
    *,
    protected: Protection = False,
    objects: tuple[str, str, str] | None = None,
    bounds: Bounds | None = None,
) -> Stamp:
    """Check (or, on an empty database, create) the app's tables and stamp for ``profile``.

    Two processes opening one empty database at once create it once: the check runs under a
    transaction-level advisory lock.

    ``objects`` (bucket, prefix, and the location as messages show it): the object prefix
    this process names. The first open records it; a later one naming another is refused,
    since every row names its object relative to it. The returned stamp carries the
    database's id, for the prefix's own stamp. ``bounds``: how long its connection waits
    (the caller's settings); a wait past them is :class:`DatabaseTimeoutError`, or
    :class:`CommitUnknownError` at the commit.

    Returns:
        The stamp, which names ``profile``.

    Raises:
        RemoteStampMismatchError: the database belongs to another profile.
        UnstampedNotEmptyError: it has tables of its own and no stamp.
        SchemaTooNewError: a newer release of the app created it.
        DatabaseUnavailableError: the server cannot be reached.
        SandboxViolationError: under pytest, a database that is not the run's scratch one.
    """
    where = mask_url(database_url)
    what = f"opening it for profile {profile!r}"
    with (
        refusals(where, what),
        connect(database_url, purpose="app open", bounds=bounds) as conn,
        committed(conn, where, what),
    ):
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", SCHEMA_LOCK)
        stamp = read_stamp(conn)
        has_tables = stamp is not None or app_schema(conn) is not None
        tables, sequences = unlogged(conn) if has_tables else ((), ())
        if stamp is None and has_tables:
            if tables or sequences:
                # A restart after a crash emptied them, the stamp with them (red team 62).
                raise UnloggedTablesError(profile, where, tables, sequences, emptied=True)
            # Its table without its row: the app's database, stamp deleted by hand. Not
            # "things that are not the app's", nor a new database to point at (red team 37).
            raise DatabaseStampMissingError(profile, where, SCHEMA_VERSION)
        if stamp is None:
            foreign = foreign_tables(conn)
            if foreign:
                raise UnstampedNotEmptyError(profile, "database_url", f"database {where}", foreign)
            schema, path = conn.execute(
                "SELECT current_schema(), current_setting('search_path')"
            ).fetchone() or (None, "")
            if schema is None:
                # No schema on the path exists to create the tables in: a bare
                # InvalidSchemaName before (red team 37).
                raise TablesOffSearchPathError(
                    where, [], str(path), pgoptions=pgoptions_setting("search_path")
                )
            if not writable_schema(conn, schema):
                # PostgreSQL 15's default (red team 39): a bare 42501 "permission denied for
                # schema public", exit 69 (retry later), with a remedy about another setting.
                info = conn.info
                raise SchemaNotWritableError(profile, where, str(schema), info.user, info.dbname)
            conn.execute(_SCHEMA)
            conn.execute(
                # Marked before its first row: every row it will hold keeps its key.
                "INSERT INTO app_stamp (profile, schema_version, content_sha256_since)"
                " VALUES (%s, %s, now())",
                (profile, SCHEMA_VERSION),
            )
            audit(conn, profile, "open", "stamp", where, {"schema_version": SCHEMA_VERSION})
            stamp = read_stamp(conn)
            assert stamp is not None
        if stamp.schema_version > SCHEMA_VERSION:
            raise SchemaTooNewError(f"database {where}", stamp.schema_version, SCHEMA_VERSION)
        if stamp.profile != profile:
            raise RemoteStampMismatchError(
                f"database {where}", "its table app_stamp", stamp.profile, profile,
                protected=needs_confirmation(protected, stamp.profile),
            )  # fmt: skip
        if tables or sequences:
            raise UnloggedTablesError(profile, where, tables, sequences)
        _add_columns(conn, profile, where)
        found, undo = hooks(conn)
        if found:
            raise TablesHookedError(profile, where, found, undo)
        found, undo = drift(conn)
        if found:
            raise TablesChangedError(profile, where, found, undo)
        if objects is None:
            return stamp
        database_id, bound_now = _bind(conn, where, objects)
        return dataclasses.replace(
            stamp,
            database_id=database_id,
            bound_now=bound_now,
            instance=instance(conn),
            timeline=timeline(conn),
            named=named_objects(conn),
        )


#: Columns of the app's tables that a database made before them lacks, and the statement
#: that adds each: the open of such a database adds them, under `SCHEMA_LOCK` and in its
#: transaction, as it adds `app_binding` (`_bind`), and audits it. Nullable, without a
#: default: a change of the catalog alone, no row rewritten, and a row from before has NULL
#: there (a session's ``content_sha256``: read unchecked, as the local store reads a
#: ``session.json`` without the key). A release from before takes the table with it (a
#: column of another's that may be left empty is left alone by its `drift`), so the schema
#: version stays 1: its replicas go on serving beside this one's, until the repair marks
#: the database (`content_sha256_since`), which raises it to 2 (`SCHEMA_VERSION`).
_ADDED_COLUMNS: Final = {
    ("app_sessions", "content_sha256"): "ALTER TABLE app_sessions ADD COLUMN content_sha256 text",
    ("app_files", "content_sha256"): "ALTER TABLE app_files ADD COLUMN content_sha256 text",
    ("app_sessions", "updated_sha256"): "ALTER TABLE app_sessions ADD COLUMN updated_sha256 text",
    ("app_stamp", "content_sha256_since"): (
        "ALTER TABLE app_stamp ADD COLUMN content_sha256_since timestamptz"
    ),
}


def content_sha256_since(conn: psycopg.Connection[Any]) -> bool:
    """Whether the stamp says every session's row keeps its ``content_sha256`` (a database
    this build made, or one `app data check --repair` marked once it hashed the rows an
    earlier build wrote without it): a row without one is then damage (rows67)."""
    row = (
        conn.cursor(row_factory=tuple_row)
        .execute("SELECT content_sha256_since IS NOT NULL FROM app_stamp")
        .fetchone()
    )
    return bool(row and row[0])


def _add_columns(conn: psycopg.Connection[Any], profile: str, where: str) -> None:
    """Add each of `_ADDED_COLUMNS` its table (in the connection's current schema) lacks."""
    for (table, column), statement in _ADDED_COLUMNS.items():
        missing = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_attribute"
            " WHERE attrelid = to_regclass(%s) AND attname = %s AND NOT attisdropped)",
            (table, table, column),
        ).fetchone()
        if missing is not None and missing[0]:
            conn.execute(statement.encode())
            audit(conn, profile, "open", "schema", where, {"added": f"{table}.{column}"})


def named_objects(conn: psycopg.Connection[Any], count: int = 3) -> tuple[str, ...]:
    """Up to ``count`` of the objects the database's rows name (live or trashed)."""
    rows = conn.cursor(row_factory=tuple_row).execute(
        "SELECT blob FROM app_files LIMIT %s", (count,)
    )
    return tuple(str(row[0]) for row in rows.fetchall())


def timeline(conn: psycopg.Connection[Any]) -> int | None:
    """The timeline the server writes WAL on (``None`` on a standby, or where the role may
    not ask): a promoted standby begins a new, higher one, and the old primary, if it still
    runs, stays on its own. The prefix's stamp keeps the highest seen, so that the old
    primary is refused once a replica opened the new one (red team 39: both served, and
    each one's repair would delete what the other acknowledged)."""
    row = (
        conn.cursor(row_factory=tuple_row)
        .execute(
            "SELECT CASE WHEN NOT pg_is_in_recovery() AND has_function_privilege("
            "'pg_catalog.pg_walfile_name(pg_lsn)', 'EXECUTE') AND has_function_privilege("
            "'pg_catalog.pg_current_wal_lsn()', 'EXECUTE')"
            " THEN ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
            " END"
        )
        .fetchone()
    )
    return None if row is None or row[0] is None else int(row[0])


def instance(conn: psycopg.Connection[Any]) -> str:
    """This database, as ``<cluster system identifier>/<database oid>``: what a copy of its
    rows (``pg_dump`` restored, ``CREATE DATABASE ... TEMPLATE``) does not carry with it.

    A streaming standby promoted by a failover keeps both; a restore, a copy on the same
    cluster or a ``pg_upgrade`` to a new cluster changes one. The binding's id is a row, and
    a copy has it too: a restored dump opened beside the live original was taken for it,
    and its ``check --repair`` deleted every object acknowledged since the dump (red team 39).
    """
    # pg_control_system() is everyone's by default; where an administrator revoked it, the
    # oid alone is compared (app.remote.objects.same_instance).
    row = (
        conn.cursor(row_factory=tuple_row)
        .execute(
            "SELECT CASE WHEN has_function_privilege('pg_catalog.pg_control_system()',"
            " 'EXECUTE') THEN (SELECT system_identifier FROM pg_control_system())::text"
            " ELSE 'unknown' END || '/' ||"
            " (SELECT oid FROM pg_database WHERE datname = current_database())::text"
        )
        .fetchone()
    )
    assert row is not None
    return str(row[0])


def _bind(
    conn: psycopg.Connection[Any], where: str, objects: tuple[str, str, str]
) -> tuple[str, bool]:
    # Under the caller's schema lock. Two machines whose settings disagree would otherwise
    # split one profile's files between two prefixes, or run one database's repair over
    # another's objects.
    if conn.execute("SELECT to_regclass('app_binding')").fetchone() == (None,):
        conn.execute(_BINDING)
    bucket, prefix, shown = objects
    row = conn.execute("SELECT database_id::text, bucket, prefix FROM app_binding").fetchone()
    created = row is None
    if row is None:
        row = conn.execute(
            "INSERT INTO app_binding (bucket, prefix) VALUES (%s, %s)"
            " RETURNING database_id::text, bucket, prefix",
            (bucket, prefix),
        ).fetchone()
        assert row is not None
    if (row[1], row[2]) != (bucket, prefix):
        raise StorageMismatchError("prefix", where, shown, f"s3://{row[1]}/{row[2]}")
    return str(row[0]), created


def unbind(database_url: str, database_id: str, bounds: Bounds | None = None) -> None:
    """Forget the prefix that an open just recorded for a database whose rows name no
    object, once the prefix refused it for good: otherwise every later open, with blob_url
    mended, was refused as naming another prefix than the recorded one, the refused one
    (red team 41). Nobody can have used the record: every open with it meets the refusal."""
    where = mask_url(database_url)
    with (
        refusals(where, "forgetting the prefix it was refused"),
        connect(database_url, purpose="app open", bounds=bounds) as conn,
        committed(conn, where, "forgetting the prefix it was refused"),
    ):
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", SCHEMA_LOCK)
        conn.execute(
            "DELETE FROM app_binding WHERE database_id::text = %s"
            " AND NOT EXISTS (SELECT 1 FROM app_files)",
            (database_id,),
        )


def writable_schema(conn: psycopg.Connection[Any], schema: str) -> bool:
    """Whether the connection's role may create tables in ``schema``."""
    row = (
        conn.cursor(row_factory=tuple_row)
        .execute("SELECT has_schema_privilege(%s, 'CREATE')", (schema,))
        .fetchone()
    )
    return bool(row and row[0])


def binding(conn: psycopg.Connection[Any]) -> tuple[str | None, str | None, str | None]:
    """The database's id and the bucket and prefix it is bound to, read only (``None`` each
    before its first open with objects)."""
    cursor = conn.cursor(row_factory=tuple_row)
    if cursor.execute("SELECT to_regclass('app_binding')").fetchone() == (None,):
        return None, None, None
    row = cursor.execute("SELECT database_id::text, bucket, prefix FROM app_binding").fetchone()
    return (None, None, None) if row is None else (str(row[0]), str(row[1]), str(row[2]))


def _json_text(word: str) -> str:
    """A command-line word as PostgreSQL's JSON takes it: one given in bytes that are not
    UTF-8 (`sessions restore --entry` of such a name) reaches Python as lone surrogates,
    which `jsonb` refuses ("Unicode low surrogate must follow a high surrogate"), and the
    refusal of the command's own change was lost under that error (red team 45's test):
    such bytes are written as ``\\xff``."""
    return word.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def audit(
    conn: psycopg.Connection[Any],
    profile: str,
    kind: str,
    operation: str,
    target: str,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Append one record to ``app_audit``, in the caller's transaction (refused where a
    trigger or rule of another's skipped it, red team 62)."""
    cursor = conn.execute(
        "INSERT INTO app_audit (profile, kind, operation, target, detail, host, pid)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (
            profile,
            kind,
            operation,
            target,
            # Who made the change, in the detail, as a data root's audit line names it: the
            # process's command line, and the HTTP client a replica's change was made for
            # (app.requester). The row's host and pid alone named a process long gone, and
            # a replica's every change as its own (red team 75 on the documentation).
            Jsonb(
                {**(detail or {}), "argv": [_json_text(word) for word in sys.argv]}
                | ({} if (client := REQUESTER.get()) is None else {"client": client})
            ),
            socket.gethostname(),
            os.getpid(),
        ),
    )
    info = conn.info
    where = f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"
    stored(cursor, where, f"the audit record of {operation} {target}", "app_audit")


# --- live replicas -----------------------------------------------------------------------


def in_recovery(conn: psycopg.Connection[Any]) -> bool:
    """Whether the server is a standby: it takes no writes, and its ``pg_locks`` holds none
    of the primary's advisory locks, so :func:`live_holders` there finds no replica even
    while some serve (red team 39: `app status` said "held by: nobody")."""
    row = conn.cursor(row_factory=tuple_row).execute("SELECT pg_is_in_recovery()").fetchone()
    return bool(row and row[0])


def standby_note(where: str) -> str:
    """What a report says of a standby's replicas."""
    return (
        f"database {where} is a standby (in recovery): the replicas' locks live on its "
        "primary, so which replicas serve it cannot be seen from here, and it takes no "
        "writes (app serve and every change are refused); point database_url at the primary"
    )


# The app's own locks a server session holds: none, on a session PostgreSQL has just begun
# for this connection. (Formatted from integer constants only.)
_SESSION_HOLDS = f"""
SELECT pg_backend_pid(), count(*) FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.pid = pg_backend_pid()
  AND ((l.classid = {HOLDERS_LOCK[0]} AND l.objid = {HOLDERS_LOCK[1]})
       OR l.classid = {ROW_LOCK_CLASS})
"""  # noqa: S608


def fresh_session(conn: psycopg.Connection[Any], where: str, wanted: str) -> int:
    """The backend pid of ``conn``'s server session, which must hold none of the app's
    locks yet; call in the transaction that takes the hold, so that the check and the lock
    run on one server session even behind a pooler.

    A connection to PostgreSQL itself begins a session of its own. Behind a pooler in
    transaction mode, a transaction runs on whichever server connection is idle, with the
    locks an earlier client (a replica, a maintenance command) took there: taking the hold
    again in that session would be granted at once, whatever the other holds.

    Raises:
        TransactionPoolerError: the server session already holds one of the app's locks.
    """
    pid, holds = conn.execute(_SESSION_HOLDS).fetchone() or (0, 0)
    if holds:
        raise TransactionPoolerError(
            where,
            wanted,
            f"the server session this connection was given (backend pid {pid}) already "
            f"holds {holds} of the app's advisory locks, taken by another client",
        )
    return int(pid)


def same_session(conn: psycopg.Connection[Any], backend_pid: int) -> str | None:
    """Why ``conn``'s next statement ran on another server session than ``backend_pid``
    (the one that holds the locks), or None; raises :class:`psycopg.Error` as a statement."""
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    now = int(row[0]) if row else 0
    if now == backend_pid:
        return None
    return (
        f"this connection's statements now run in server session (backend pid) {now}, "
        f"while its locks are held by backend {backend_pid}: database_url goes through a "
        "connection pooler in transaction mode"
    )


#: How a replica's holding session names itself (its ``application_name``) once its server
#: is stopping, finishing the requests in flight (`Holder.stopping`); then the time.
STOPPING: Final = "app serve stopping since "


def live_holders(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every live replica's row: id, host, pid, profile, since, url, backend_pid; and
    ``stopping_since`` for a replica whose server is stopping (`Holder.stopping`)."""
    with conn.cursor(row_factory=dict_row) as cursor:
        rows = list(cursor.execute(_LIVE).fetchall())
    for row in rows:
        name = row.pop("session_name", None) or ""
        if name.startswith(STOPPING):
            since = name.removeprefix(STOPPING)
            # Only a time is repeated: any client of the role may name its session so.
            with contextlib.suppress(ValueError):
                datetime.fromisoformat(since)
                row["stopping_since"] = since
    return rows


def clean_stale_holders(conn: psycopg.Connection[Any]) -> int:
    """Delete rows whose replica is gone; returns how many."""
    cursor = conn.execute(f"DELETE FROM app_holders WHERE id NOT IN (SELECT id FROM ({_LIVE}) l)")  # noqa: S608
    return cursor.rowcount


def _lock_holders(conn: psycopg.Connection[Any], mode: str) -> str:
    return "; ".join(lock_holders(conn, mode)) or "a connection that has since gone"


def lock_holders(conn: psycopg.Connection[Any], mode: str = "ExclusiveLock") -> list[str]:
    """Who else holds :data:`HOLDERS_LOCK` in ``mode``, by backend pid and
    ``application_name``; in ``ExclusiveLock`` mode, a running maintenance command. Only
    reads ``pg_locks``: takes no lock."""
    rows = conn.execute(
        """
        SELECT l.pid, coalesce(a.application_name, '') FROM pg_locks l
        LEFT JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.mode = %s
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid = %s AND l.objid = %s AND l.pid <> pg_backend_pid()
        """,
        (mode, *HOLDERS_LOCK),
    ).fetchall()
    return [f"backend pid {pid}" + (f", {name}" if name else "") for pid, name in rows]


def prepared_holders(conn: psycopg.Connection[Any], mode: str | None = None) -> list[str]:
    """:func:`prepared_transactions`, each as :func:`describe_prepared` says it."""
    return [describe_prepared(*row) for row in prepared_transactions(conn, mode)]


def prepared_transactions(
    conn: psycopg.Connection[Any], mode: str | None = None
) -> list[tuple[str, str, datetime]]:
    """The prepared transactions (two-phase commit, ``PREPARE TRANSACTION``) of this
    database that hold :data:`HOLDERS_LOCK` in ``mode``, or, with ``mode`` None, any lock on
    a relation of the app's schema or any of the app's advisory locks: each its gid, owner
    and when it was prepared.

    Such a transaction belongs to no process (``pg_locks`` shows its locks with no pid,
    ``pg_stat_activity`` has no row for it, ``pg_blocking_pids`` names it as 0) and a restart
    of the server keeps it, with its locks, until its owner (or a superuser) commits or rolls
    it back: a transaction manager that lost track of one leaves it for good. Maintenance was
    refused as held by "a connection that has since gone", a replica's start as behind "a
    maintenance command" to wait for, and neither ever ended (red team 71 on the remote
    backend). Only reads ``pg_locks`` and ``pg_prepared_xacts``: takes no lock."""
    held = (
        "l.locktype = 'advisory' AND l.objsubid = 2 AND l.mode = %s"
        " AND l.classid = %s AND l.objid = %s"
        if mode is not None
        else "(l.locktype = 'advisory' AND l.classid = %s OR l.relation IN (SELECT c.oid"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema()))"
    )
    rows = conn.execute(
        "SELECT DISTINCT p.gid, p.owner, p.prepared FROM pg_prepared_xacts p"  # noqa: S608
        " JOIN pg_locks x ON x.locktype = 'transactionid' AND x.pid IS NULL"
        " AND x.transactionid = p.transaction"
        " JOIN pg_locks l ON l.virtualtransaction = x.virtualtransaction AND l.pid IS NULL"
        " AND l.granted AND l.database = (SELECT oid FROM pg_database"
        " WHERE datname = current_database())"
        f" WHERE p.database = current_database() AND {held} ORDER BY 3, 1",
        (mode, *HOLDERS_LOCK) if mode is not None else (LOCK_CLASS,),
    ).fetchall()
    return [(str(gid), str(owner), prepared) for gid, owner, prepared in rows]


def _literal(text: str) -> str:
    """``text`` as a string literal to paste as it is printed: quoted, its quotes doubled;
    an escape string (``E'...'``) where it has a character a terminal acts on or hides, or a
    backslash. A gid is any text of up to 200 bytes: one with an escape character or a
    newline, printed raw in a literal, was shown by `app doctor` and each refusal as
    ``printable`` writes it (``\\x1b``), which pasted ends no transaction (``ROLLBACK
    PREPARED 'a\\x1bb'``: no such gid), and a newline split doctor's line in two; a
    backslash is a plain character only where ``standard_conforming_strings`` is on (red team
    71 on regress)."""
    if text.isprintable() and "\\" not in text:
        return "'" + text.replace("'", "''") + "'"
    escaped = "".join(_escaped_char(char) for char in text)
    return f"E'{escaped}'"


def _escaped_char(char: str) -> str:
    """A character as an escape string (``E'...'``) holds it, printable as it is printed."""
    if char in "\\'":
        return "\\" + char
    if char.isprintable():
        return char
    code = ord(char)
    return (
        f"\\x{code:02x}"
        if code < 0x80
        else f"\\u{code:04x}"
        if code <= 0xFFFF
        else f"\\U{code:08x}"
    )


def name_prepared(gid: str, owner: str, prepared: datetime) -> str:
    """A prepared transaction, named: doctor's ``prepared`` line. Made, not cut from
    :func:`describe_prepared` at its first `` (``, which a gid may hold (``xa (retry 2)``:
    the line gave ``prepared transaction 'xa``; red team 71 on regress, round k)."""
    return (
        f"prepared transaction {_literal(gid)} of role {owner}, prepared "
        f"{prepared.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    )


def describe_prepared(gid: str, owner: str, prepared: datetime) -> str:
    """A prepared transaction, named with what ends it."""
    literal = _literal(gid)
    return (
        f"{name_prepared(gid, owner, prepared)} (two-phase commit: no process "
        "holds it, and a restart of the server keeps it); as that role or a superuser, "
        f"`ROLLBACK PREPARED {literal}` ends it, or `COMMIT PREPARED {literal}` where the "
        "transaction manager that prepared it committed its other parts"
    )


class Holder:
    """A replica's hold on the database: shared lock + row, for the process's whole life.

    ``start()`` refuses while maintenance holds the database, and under pytest a database
    that is not one of the run's scratch ones (:func:`connect`). A thread watches the
    connection: when it breaks (the server stopped, ``pg_terminate_backend``, keepalives
    gave up), ``lost`` is set, :meth:`check` raises :class:`HolderLostError` from then on,
    and ``on_lost`` is called once, from that thread, so that the server can stop.
    """

    def __init__(
        self,
        database_url: str,
        profile: str,
        url: str | None = None,
        *,
        on_lost: Callable[[HolderLostError], None] | None = None,
        ping_seconds: float = 1.0,
        lock_wait_seconds: float = 10.0,
    ) -> None:
        self.database_url = database_url
        self.lock_wait_seconds = lock_wait_seconds
        self.where = mask_url(database_url)
        self.profile = profile
        self.url = url
        self.on_lost = on_lost
        self.ping_seconds = ping_seconds
        self.row: dict[str, Any] = {}
        self.error: HolderLostError | None = None
        # The heartbeat, as `time.monotonic()`: when the last ping was sent, and when the
        # last answer came. A ping asked long ago and not answered is a database that does
        # not answer (stopped, cut off), which readiness reports without a query of its own.
        self.asked = self.answered = time.monotonic()
        self._conn: psycopg.Connection[Any] | None = None
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1

    @property
    def lost(self) -> bool:
        """Whether the connection, and with it the hold, is gone."""
        return self.error is not None

    def start(self) -> Self:
        conn = connect(self.database_url, purpose="app serve", autocommit=True)
        try:
            with refusals(self.where, "this replica's hold (its row in app_holders)"):
                # The session's settings, not the wait bound: closing this connection on a
                # slow answer would give up the hold.
                configure_session(conn, self.lock_wait_seconds)
                with conn.transaction():
                    # One transaction, so one server session even behind a pooler: the
                    # check that the session holds none of the app's locks, the shared lock,
                    # the row and its lock (committed together, so that no cleaner sees the
                    # row before its lock exists).
                    fresh_session(conn, self.where, "serving")
                    taken = conn.execute(
                        "SELECT pg_try_advisory_lock_shared(%s, %s)", HOLDERS_LOCK
                    ).fetchone()
                    if taken != (True,):
                        prepared = "; ".join(prepared_holders(conn, "ExclusiveLock"))
                        raise MaintenanceRunningError(
                            self.where,
                            prepared or _lock_holders(conn, "ExclusiveLock"),
                            prepared=bool(prepared),
                        )
                    with conn.cursor(row_factory=dict_row) as cursor:
                        row = cursor.execute(
                            # Its backend named here, not by the column's default: one a
                            # DBA changed (red team 63: DEFAULT 0) left every live replica
                            # "not live", `app status` listing none and maintenance's
                            # refusal calling them stopped replicas' writes.
                            "INSERT INTO app_holders (host, pid, profile, url, backend_pid)"
                            " VALUES (%s, %s, %s, %s, pg_backend_pid())"
                            " RETURNING id, host, pid, profile, since, url, backend_pid",
                            (socket.gethostname(), os.getpid(), self.profile, self.url),
                        ).fetchone()
                    assert row is not None
                    conn.execute("SELECT pg_advisory_lock(%s, %s)", (ROW_LOCK_CLASS, row["id"]))
                clean_stale_holders(conn)
        except BaseException:
            conn.close()
            raise
        self.row, self._conn = row, conn
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._watch, name="app-holder-watch", daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        conn = self._conn
        assert conn is not None
        while True:
            # Readable with no query in flight means the server spoke first (it terminated
            # the backend, or shut down); the periodic ping catches a silent loss.
            ready, _, _ = select.select([self._wake_r, conn.fileno()], [], [], self.ping_seconds)
            if self._wake_r in ready:
                return
            self.asked = time.monotonic()
            try:
                moved = same_session(conn, self.row["backend_pid"])
            except psycopg.Error as error:
                self._lose(_reason(error))
                return
            self.answered = time.monotonic()
            if moved is not None:
                self.lose(
                    moved,
                    POOLER_REMEDY,
                    "this server's database session moved to another PostgreSQL backend (a "
                    "pooler in transaction mode), which does not hold its locks",
                )
                return

    def stopping(self, since: str) -> None:
        """Say in this hold's own session, as its ``application_name`` (:data:`STOPPING`),
        that its server is stopping since ``since``, finishing the requests in flight: the
        row has no column for it, and a replica so stopping was named "serving" by `app
        status` and by maintenance's refusal, which said to stop it (red team 75 on serve
        --workers; a data root's holder says so in its lock file, red team 44)."""
        if self._conn is None or self.lost or self.silent_for() > 0:
            return  # not while a ping waits: the stop goes on, its replica named as serving
        with contextlib.suppress(psycopg.Error):
            self._conn.execute(
                "SELECT set_config('application_name', %s, false)", (STOPPING + since,)
            )

    def silent_for(self) -> float:
        """For how long a ping of the heartbeat has gone unanswered (0 when none waits)."""
        asked, answered = self.asked, self.answered
        return 0.0 if answered >= asked else time.monotonic() - asked

    def lose(self, reason: str, remedy: str | None = None, said: str | None = None) -> None:
        """End the hold's use: the object prefix was handed to another database, or lost
        its stamp, for ``reason``; every write is refused from now on (the connection stays
        until :meth:`close`). ``remedy``: what lets the server restart, if not another
        ``database_url``; ``said``: what happened, without addresses (the HTTP answer)."""
        self._lose(reason, handed_away=True, remedy=remedy, said=said)

    def _lose(
        self,
        reason: str,
        *,
        handed_away: bool = False,
        remedy: str | None = None,
        said: str | None = None,
    ) -> None:
        self.error = HolderLostError(
            self.where, reason, handed_away=handed_away, remedy=remedy, said=said
        )
        if self.on_lost is not None:
            self.on_lost(self.error)

    def check(self) -> None:
        """Raise :class:`HolderLostError` if the hold is gone (call before every write)."""
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Delete the row and end the connection (which releases both locks)."""
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join()
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._thread = None
        if self._conn is not None:
            if not self.lost:
                with contextlib.suppress(psycopg.Error):
                    self._conn.execute("DELETE FROM app_holders WHERE id = %s", (self.row["id"],))
                    # Released before the close returns: the backend ends a moment after
                    # the client hangs up, and a maintenance command started right after a
                    # replica stopped must not find its locks still there.
                    self._conn.execute("SELECT pg_advisory_unlock_all()")
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        # `with Holder(...).start():` must not take a second row and lock.
        return self if self._conn is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- maintenance -------------------------------------------------------------------------


class Maintenance:
    """The database held exclusively, for a destructive command; see :func:`maintenance`.

    The hold lives as long as :attr:`conn`: a connection terminated, or a server restarted,
    ends it, and a replica may start at once. :meth:`check` (before a step) and
    :meth:`still_held` (in a write's transaction, at its commit point) notice that.
    """

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        profile: str,
        where: str,
        wanted: str = "maintain",
        backend_pid: int = 0,
    ) -> None:
        self.conn = conn
        self.profile = profile
        self.where = where
        self.wanted = wanted
        # The server session's, from the transaction that took the hold: a pooler (even in
        # session mode) answers the client's connection with a process id of its own.
        self.backend_pid: int = backend_pid or conn.info.backend_pid

    def lost(self, reason: str) -> MaintenanceLostError:
        """The error this command stops with once its hold is gone (exit 70)."""
        return MaintenanceLostError(self.wanted, self.where, reason)

    def check(self) -> None:
        """Raise :class:`MaintenanceLostError` if the connection holding the database is gone.

        A live connection still holds its session-level lock: only it can release it.
        """
        try:
            moved = same_session(self.conn, self.backend_pid)
        except psycopg.Error as error:
            raise self.lost(_reason(error)) from None
        if moved is not None:
            raise self.lost(f"{moved}. {POOLER_REMEDY}")

    def still_held(self, conn: psycopg.Connection[Any]) -> None:
        """Raise :class:`MaintenanceLostError` unless this command's backend still holds the
        database exclusively, as seen from ``conn`` (another connection, in its transaction)."""
        held = conn.execute(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2"
            " AND mode = 'ExclusiveLock' AND pid = %s AND classid = %s AND objid = %s",
            (self.backend_pid, *HOLDERS_LOCK),
        ).fetchone()
        if held is None:
            raise self.lost(f"backend {self.backend_pid} no longer holds its exclusive lock")

    def audit(self, operation: str, target: str, detail: Mapping[str, Any] | None = None) -> None:
        """Append a maintenance record (in the current transaction, if any)."""
        audit(self.conn, self.profile, "maintenance", operation, target, detail)

    def audit_made(
        self, operation: str, target: str, detail: Mapping[str, Any] | None = None
    ) -> str | None:
        """Append the record of a change already made in the object store (a stamp written
        back, handed over, adopted), which no rollback undoes.

        A refusal of the row (a lock held on ``app_audit`` past ``lock_timeout``, the disk
        full, the connection lost) was a bare psycopg traceback, exit 1, of a re-stamp that
        was made, recorded nowhere (red team 49). The row goes to the process's log instead,
        as a data root's line does.

        Returns:
            Why the row was refused, or None once it is written.
        """
        try:
            with refusals(self.where, f"the audit record of {operation}"):
                self.audit(operation, target, detail)
        except (AppError, psycopg.Error) as error:
            why = (
                str(getattr(error, "reason", "") or error.message)
                if isinstance(error, AppError)
                else " ".join(str(error).split())
            )
            row = {"operation": operation, "target": target, **dict(detail or {})}
            log.warning(
                "could not record a change in %s's audit table (%s); the row it should hold: %s",
                self.where,
                why,
                json.dumps(row, default=str),
            )
            return why
        return None

    def names_objects(self, bucket: str, prefix: str, blobs: list[str]) -> str | None:
        """The database's id if it is bound to ``bucket`` and ``prefix`` and its rows name
        one of ``blobs`` (names the app made, random and never reused: no other database's
        rows can name them); ``None`` otherwise. What a lost prefix stamp is written back
        on."""
        bound = self.bound_to(bucket, prefix)
        if bound is None:
            return None
        named = self.conn.execute(
            "SELECT 1 FROM app_files WHERE blob = ANY(%s) LIMIT 1", (blobs,)
        ).fetchone()
        return None if named is None else bound

    def bound_to(self, bucket: str, prefix: str) -> str | None:
        """The database's id if it is bound to ``bucket`` and ``prefix``, else ``None``."""
        if self.conn.execute("SELECT to_regclass('app_binding')").fetchone() == (None,):
            return None
        bound = self.conn.execute(
            "SELECT database_id::text FROM app_binding WHERE bucket = %s AND prefix = %s",
            (bucket, prefix),
        ).fetchone()
        return None if bound is None else str(bound[0])

    def restamp(self, from_profile: str, *, protected: Protection = False) -> Stamp:
        """Hand the database stamped ``from_profile`` to this profile (audited)."""
        what = f"the re-stamp from {from_profile!r} to {self.profile!r}"
        with committed(self.conn, self.where, what):
            stamp = read_stamp(self.conn)
            if stamp is None:
                raise UnstampedNotEmptyError(
                    self.profile, "database_url", f"database {self.where}", ["no app_stamp"]
                )
            if stamp.profile == self.profile:
                return stamp  # a repeated command: nothing to do, nothing to audit
            tables, sequences = unlogged(self.conn)
            if tables or sequences:
                # Refused as the open refuses them (red team 64, regress: the re-stamp of
                # a database whose app_stamp was UNLOGGED said "is now stamped", exit 0, and
                # handed the object prefix over too, where every other command refused; a
                # crash then emptied the stamp the prefix's no longer matched). Before the
                # prefix is touched, which is handed over after the database.
                raise UnloggedTablesError(self.profile, self.where, tables, sequences)
            if stamp.profile != from_profile:
                raise RemoteStampMismatchError(
                    f"database {self.where}", "its table app_stamp", stamp.profile,
                    self.profile, protected=needs_confirmation(protected, stamp.profile),
                )  # fmt: skip
            self.conn.execute(
                "UPDATE app_stamp SET profile = %s, restamped_from = %s",
                (self.profile, from_profile),
            )
            self.audit("restamp", self.where, {"from": from_profile, "to": self.profile})
            new = read_stamp(self.conn)
        assert new is not None
        return new


@contextlib.contextmanager
def maintenance(
    database_url: str, profile: str, wanted: str, bounds: Bounds | None = None
) -> Iterator[Maintenance]:
    """Hold the database exclusively for ``wanted`` ("empty the trash"), or refuse at once.

    ``bounds``: how long the holding connection waits for an answer; past them the command
    stops (:class:`DatabaseTimeoutError`, or :class:`MaintenanceLostError` at a check), the
    connection closed and so the hold ended.

    Raises:
        ReplicasLiveError: a replica (or another maintenance command) holds it (exit 75);
            the message names every live replica.
        SandboxViolationError: under pytest, a database that is not the run's scratch one.
    """
    where = mask_url(database_url)
    with connect(
        database_url, purpose=f"app maintenance: {wanted}", autocommit=True, bounds=bounds
    ) as conn:
        with refusals(where, f"the hold to {wanted}"), conn.transaction():
            # In one transaction: one server session, even behind a pooler.
            backend_pid = fresh_session(conn, where, f"the hold to {wanted}")
            taken = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", HOLDERS_LOCK).fetchone()
        if taken != (True,):
            others = writing = prepared = ""
            with refusals(where, f"the hold to {wanted}"):
                replicas = live_holders(conn) if read_stamp(conn) is not None else []
                if not replicas:
                    others = "; ".join(lock_holders(conn, "ExclusiveLock"))
                    # A replica's write holds the lock shared to its commit (app.remote.db),
                    # so that no maintenance begins between its check and its commit.
                    writing = "" if others else "; ".join(lock_holders(conn, "ShareLock"))
                    if not (others or writing):
                        prepared = "; ".join(
                            prepared_holders(conn, "ExclusiveLock")
                            + prepared_holders(conn, "ShareLock")
                        )
                    others = others or (
                        "" if writing or prepared else "a connection that has since gone"
                    )
            raise ReplicasLiveError(wanted, where, replicas, others, writing, prepared)
        try:
            with refusals(where, f"the hold to {wanted}"):
                clean_stale_holders(conn)
            yield Maintenance(conn, profile, where, wanted, backend_pid)
        finally:
            _release_maintenance(conn, backend_pid, where, wanted)


def _release_maintenance(
    conn: psycopg.Connection[Any], backend_pid: int, where: str, wanted: str
) -> None:
    """Release maintenance's exclusive lock, and say so where it stays held.

    Behind a pooler in transaction mode the unlock may run in another server session than
    the one that took the lock (the pooler gave that one to another client meanwhile): it
    released nothing, and the command ended without a word while every replica and
    maintenance after it was refused, naming a command that had ended (red team 61). The
    lock stays until that session ends, which the app cannot do under another client's
    transaction: the log says which session holds it, and what releases it.
    """
    with contextlib.suppress(psycopg.Error), conn.transaction():
        # One transaction: the unlock and the look at where it ran, in one server session.
        mine = conn.execute(
            "SELECT pg_backend_pid() = %s, pg_advisory_unlock(%s, %s)",
            (backend_pid, *HOLDERS_LOCK),
        ).fetchone()
        if mine is not None and mine[0]:
            return
        state = conn.execute(
            "SELECT coalesce(a.state, '') FROM pg_locks l"
            " LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
            " AND l.mode = 'ExclusiveLock' AND l.pid = %s AND l.classid = %s AND l.objid = %s",
            (backend_pid, *HOLDERS_LOCK),
        ).fetchone()
        if state is None:
            return  # its session has ended (the pooler closed it): nothing is held
        doing = (
            "another client's transaction runs there now"
            if state[0] != "idle"
            else "it is idle in the pooler's pool"
        )
        log.warning(
            "the hold to %s ended, but its exclusive lock stays on server session %d of "
            "database %s: the connection pooler in transaction mode ran the unlock in "
            "another server session (%s). Until that session ends, every replica and "
            "maintenance command is refused: end it (`SELECT pg_terminate_backend(%d)` once "
            "no transaction of another client runs there, or the pooler's RECONNECT). %s",
            wanted,
            backend_pid,
            where,
            doing,
            backend_pid,
            POOLER_REMEDY,
        )


# --- per-run databases (the pytest plugin's) ----------------------------------------------


def scratch_url(database_url: str, suffix: str) -> str:
    """The URL of the database named like ``database_url``'s, plus ``suffix``, on the same
    server: where one pytest run (or xdist worker) keeps its data."""
    name = database_addresses(database_url)[0].dbname + suffix
    return make_conninfo(database_url, dbname=name)


def create_scratch_database(database_url: str, suffix: str) -> str:
    """Create :func:`scratch_url`'s database (empty, whatever ``template1`` holds; the app
    stamps it on first open).

    Under pytest only the run's own: ``suffix`` must end with the run's scratch suffix.

    Returns:
        Its URL.
    """
    url = scratch_url(database_url, suffix)
    name = database_addresses(url)[0].dbname
    full = database_addresses(database_url)[0].dbname + suffix
    if name != full:
        room = _NAME_BYTES - len(suffix.encode())
        msg = (
            f"the scratch database's name {full!r} is {len(full.encode())} bytes, and "
            f"PostgreSQL cuts a name to {_NAME_BYTES}, which would cut the run's suffix off it "
            f"({name!r}): name a database of at most {room} bytes in database_url"
        )
        raise ValueError(msg)
    with (
        _server(url, "creating") as conn,
        refusals(_admin_where(url), f"the creation of the scratch database {name!r}"),
    ):
        # Under refusals: a statement_timeout of the role's (or the database's) cancels it
        # with the settings' sources named, not a bare "canceling statement" (red team 55).
        _create_from_template0(conn, name)
    return url


def _create_from_template0(conn: psycopg.Connection[Any], name: str) -> None:
    """``CREATE DATABASE`` of a scratch database: a copy of ``template0``, in UTF-8.

    A plain ``CREATE DATABASE`` copies ``template1``, which a DBA may have given tables of
    their own (or an encoding other than UTF-8): every scratch database then held them, its
    first open was refused as holding "things that are not the app's", and every remote test
    of the run failed, told to point database_url at a new database, which the plugin makes
    itself (red team 51). ``template0`` holds nothing but the system's catalogues; the
    collation and character classes stay template1's, as a database a DBA makes has them,
    unless they cannot hold UTF-8 (then ``C``, which holds any encoding).
    """
    found = conn.execute(
        "SELECT datcollate, datctype FROM pg_database WHERE datname = 'template1'"
    ).fetchone()
    create = sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
        sql.Identifier(name)
    )
    if found is not None:
        try:
            conn.execute(
                create
                + sql.SQL(" LC_COLLATE {} LC_CTYPE {}").format(
                    sql.Literal(found[0]), sql.Literal(found[1])
                )
            )
        except psycopg.errors.InvalidParameterValue:
            pass  # a locale of another encoding than UTF-8 (en_US.ISO-8859-1, say)
        else:
            return
    conn.execute(create + sql.SQL(" LOCALE 'C'"))


def drop_scratch_database(database_url: str, suffix: str) -> None:
    """Drop the database that :func:`create_scratch_database` made for ``suffix``.

    Only a name that ends with the suffix is ever dropped, so that no mistake in the caller
    can turn this into a drop of the database a profile names; under pytest, only a name that
    ends with the run's own suffix, so that no test can either.
    """
    url = scratch_url(database_url, suffix)
    name = database_addresses(url)[0].dbname
    if not suffix or not name.endswith(suffix):
        raise ValueError(f"refusing to drop {name!r}: not a scratch database ending in {suffix!r}")
    with (
        _server(url, "dropping") as conn,
        refusals(_admin_where(url), f"the drop of the scratch database {name!r}"),
    ):
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _admin_where(scratch: str) -> str:
    """The database :func:`_server` connects to, as messages show it."""
    return mask_url(make_conninfo(scratch, dbname="postgres"))


def _server(scratch: str, verb: str) -> psycopg.Connection[tuple[Any, ...]]:
    # CREATE and DROP DATABASE run outside a transaction, connected to another database of
    # the server (``postgres``), which is no run's scratch: under a test run the database
    # to be made or dropped must be the run's instead, so a suffix that completes another
    # name ("rev" + "iew") cannot drop production's.
    sandbox.check_scratch("database_url", scratch, verb)
    admin = make_conninfo(scratch, dbname="postgres")
    return _connect(admin, f"app {verb} a scratch database", True, None)
