"""Sessions and files on PostgreSQL and object storage: the second backend of the storage seam.

The same public interface, records and errors as :class:`app.store.Store`, mapped onto rows
and objects (see the design's "Beyond one machine"):

* **Rows are the truth.** ``app_sessions`` and ``app_files`` (created with the stamp by
  :func:`app.remote.pg.open_database`) say which sessions and files exist; an object is
  reachable only through a row that names it.
* **A file appears in one transaction.** An upload streams straight to a fresh, immutable
  object (:mod:`app.remote.transfer`); the row that names it is inserted in one transaction
  when the upload commits. A replace switches in that same transaction: the old row goes to
  the trash state and the new one becomes the live row. An upload that never
  commits leaves an object no row names, which :meth:`RemoteStore.check` finds and removes.
* **Several replicas.** Every change to a session's files first locks the session's row
  (``SELECT ... FOR NO KEY UPDATE``), so that two replicas serialise on it in the database,
  not in a process; a unique index allows one live file per name. Nothing is cached between
  calls, so what one replica commits the next read of any other sees.
* **Soft deletes, audited.** Deleting a session or a file sets its row's trash state; the
  objects stay until :meth:`RemoteStore.empty_trash` deletes the rows (and then the
  objects). Every destructive operation appends to ``app_audit`` in the transaction of the
  change, so the record and the change commit together.
* **Held.** Given a :class:`~app.remote.pg.Holder` (a server replica's), every write first
  checks that it is live, so a replica that lost its connection refuses writes at once.

Connections: a :class:`psycopg_pool.ConnectionPool` (psycopg's own pool), because the server
calls the store from many threads; the pool bounds the connections a replica opens and checks
each one before lending it, so a database restart costs one failed request at most, not a
broken connection per thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Literal, Self, cast

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Json

from app.errors import (
    BadRequestError,
    FileExistsInSessionError,
    FileNotFoundInSessionError,
    SessionNotFoundError,
    TooManyFilesError,
)
from app.names import check_file_name
from app.remote import pg
from app.remote.errors import DatabaseUnavailableError, HolderLostError
from app.remote.objects import BLOBS, ObjectStore, PutResult
from app.remote.transfer import ObjectFile, RemoteUpload
from app.storage import (
    CheckReport,
    FileEntry,
    Finding,
    Page,
    SessionRecord,
    TrashEntry,
    checked_session_fields,
)
from app.store.ids import check_session_id, new_session_id

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

__all__ = ["RemoteStore"]

log = logging.getLogger("app.remote.store")

_TRASH_TIME_FORMAT: Final = "%Y%m%dT%H%M%S%fZ"
_ITER_BATCH: Final = 500


def _utc(column: str) -> str:
    # Exactly Python's isoformat(timespec="microseconds") of a UTC time, which the local
    # backend returns, whatever the connection's TimeZone.
    return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"


_FILE_JSON: Final = (
    "json_build_object('name', f.name, 'size', f.size, 'sha256', f.sha256, "
    f"'uploaded_at', {_utc('f.uploaded_at')})"
)
# One statement per read, so that a session and its files come from one snapshot.
_SESSION_SELECT: Final = f"""
SELECT s.id, s.title, s.metadata, {_utc("s.created_at")} AS created_at,
       {_utc("s.updated_at")} AS updated_at,
       coalesce((SELECT json_agg({_FILE_JSON} ORDER BY f.uploaded_at, f.name)
                 FROM app_files f WHERE f.session_id = s.id AND f.deleted_at IS NULL),
                '[]'::json) AS files
FROM app_sessions s
"""  # noqa: S608 (formatted from constants only)

_FILE_SELECT: Final = f"""
SELECT s.id AS session, f.name, f.size, f.sha256, f.blob, f.uploaded_at,
       {_utc("f.uploaded_at")} AS uploaded_iso
FROM app_sessions s LEFT JOIN app_files f
  ON f.session_id = s.id AND f.name = %s AND f.deleted_at IS NULL
WHERE s.id = %s AND s.deleted_at IS NULL
"""  # noqa: S608 (formatted from constants only)


def _now() -> datetime:
    return datetime.now(UTC)


def _trash_name(moment: datetime, session_id: str, *, file: bool) -> str:
    # The local backend's names, so that `app sessions list --trash` reads the same; a file
    # entry has a random suffix (one file can be replaced many times in a microsecond).
    suffix = f"-file-{secrets.token_hex(4)}" if file else ""
    return f"{moment.strftime(_TRASH_TIME_FORMAT)}-{session_id}{suffix}"


def _session(row: dict[str, Any]) -> SessionRecord:
    # The key order session.json always had.
    return cast(SessionRecord, dict(sorted(row.items())))


def _reason(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


class _Watch:
    def __init__(
        self, holder: pg.Holder | None, interval: float, on_lost: Callable[[str], object]
    ) -> None:
        self._stop = threading.Event()
        self._holder = holder
        self._interval = interval
        self._on_lost = on_lost
        self._thread = threading.Thread(target=self._run, name="app-store-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self._holder is not None and self._holder.error is not None:
                self._on_lost(self._holder.error.reason)
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# --- the store --------------------------------------------------------------------------------


class RemoteStore:
    """Sessions and their files in one database and one object prefix, shared by replicas.

    Args:
        database_url: the database (already opened, hence stamped, by
            :func:`app.remote.pg.open_database`).
        objects: the object prefix (already opened by :meth:`ObjectStore.open`).
        profile: the profile, for audit rows.
        holder: this replica's live hold on the database; every write checks it first.
            ``None`` for maintenance commands, which hold the database exclusively instead.
            The store closes it in :meth:`close`.
        kind: who writes, for audit rows (``"server"``, ``"maintenance"``, ``"tests"``).
        max_upload_bytes: the largest file accepted.
        max_files_per_session: the most live files one session may hold.
        orphan_grace: how old an object without a row must be before :meth:`check` calls it
            an orphan (younger ones may belong to an upload about to commit).
        pool_size: the most connections this process opens.
        on_close: called last by :meth:`close` (a maintenance command's exclusive hold,
            :func:`app.remote.pg.maintenance`, ends there).
    """

    def __init__(
        self,
        database_url: str,
        objects: ObjectStore,
        profile: str,
        *,
        holder: pg.Holder | None = None,
        kind: str = "server",
        max_upload_bytes: int = 100 * 1024 * 1024,
        max_files_per_session: int = 10_000,
        orphan_grace: timedelta = timedelta(hours=1),
        pool_size: int = 8,
        on_close: Callable[[], object] | None = None,
    ) -> None:
        from psycopg_pool import ConnectionPool, PoolTimeout

        self.database_url = database_url
        self.where = pg.mask_url(database_url)
        self.objects = objects
        self.profile = profile
        self.holder = holder
        self.kind = kind
        self.max_upload_bytes = max_upload_bytes
        self.max_files = max_files_per_session
        self.orphan_grace = orphan_grace
        self._on_close = on_close
        self._pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(
            pg.conninfo(database_url, purpose=f"app {kind}"),
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "row_factory": dict_row},
            check=ConnectionPool.check_connection,
            name=f"app-{kind}",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=10)
        except PoolTimeout as error:
            self._pool.close()
            raise DatabaseUnavailableError(self.where, _reason(error)) from None

    # -- plumbing ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        from psycopg_pool import PoolTimeout

        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as error:
            raise DatabaseUnavailableError(self.where, _reason(error)) from None

    @contextlib.contextmanager
    def _write(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """A transaction for a change, after checking that this replica still holds."""
        self.ensure_held()
        with self._conn() as conn, conn.transaction():
            yield conn
            self._still_held(conn)

    def _still_held(self, conn: psycopg.Connection[Any]) -> None:
        # Again at the commit point, and in the database rather than in this process: the
        # holder's watch notices a lost connection within a ping, and a change must not
        # commit in that window, when maintenance may already hold the database.
        if self.holder is None or not self.holder.row:
            return
        held = conn.execute(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2"
            " AND pid = %s AND classid = %s AND objid = %s",
            (self.holder.row["backend_pid"], pg.ROW_LOCK_CLASS, self.holder.row["id"]),
        ).fetchone()
        if held is None:
            raise HolderLostError(
                self.where, f"backend {self.holder.row['backend_pid']} no longer holds its lock"
            )

    def _audit(
        self, conn: psycopg.Connection[Any], operation: str, target: str, **details: Any
    ) -> None:
        pg.audit(conn, self.profile, self.kind, operation, target, details)

    def _lock_session(self, conn: psycopg.Connection[Any], session_id: str) -> dict[str, Any]:
        # The row lock every change to a session's files takes first: replicas serialise on
        # it, and a session deleted meanwhile is seen here.
        row = conn.execute(
            "SELECT id, title FROM app_sessions WHERE id = %s AND deleted_at IS NULL"
            " FOR NO KEY UPDATE",
            (session_id,),
        ).fetchone()
        if row is None:
            raise SessionNotFoundError(session_id)
        return cast(dict[str, Any], row)

    # -- the holder -------------------------------------------------------------------

    @property
    def location(self) -> str:
        """Where the data lives, for messages."""
        return f"database {self.where} with objects in {self.objects.where}"

    @property
    def trash_location(self) -> str:
        """Where deleted sessions and files are kept, for messages."""
        return (
            f"the trash state of rows in database {self.where} (their objects stay in "
            f"{self.objects.where} until empty-trash)"
        )

    def ensure_held(self) -> None:
        """Raise :class:`HolderLostError` if this replica's hold on the database is gone."""
        if self.holder is not None:
            self.holder.check()

    def audit(self, operation: str, target: str | Path, **details: Any) -> None:
        """Append one row to ``app_audit`` (its own transaction)."""
        with self._conn() as conn:
            self._audit(conn, operation, str(target), **details)

    def publish(self, **fields: Any) -> None:
        """Add to what this replica's holder row says about it (``url``, or ``port``)."""
        if self.holder is None or not self.holder.row:
            return
        url = fields.get("url") or (f"port {fields['port']}" if "port" in fields else None)
        if url is None:
            return
        with self._conn() as conn:
            conn.execute(
                "UPDATE app_holders SET url = %s WHERE id = %s", (str(url), self.holder.row["id"])
            )
        self.holder.url = str(url)

    def watch(self, interval: float, on_lost: Callable[[str], object]) -> _Watch:
        """Call ``on_lost(reason)`` once, within ``interval`` seconds of the holder's loss."""
        return _Watch(self.holder, interval, on_lost)

    def lost_error(self, reason: str) -> HolderLostError:
        """The error a replica that lost its connection stops with (exit 70)."""
        return HolderLostError(self.where, reason)

    def close(self) -> None:
        """Close the pool, then the holder (which releases this replica's hold)."""
        try:
            self._pool.close()
        finally:
            if self.holder is not None:
                self.holder.close()
            if self._on_close is not None:
                self._on_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- sessions ---------------------------------------------------------------------

    def create_session(
        self, title: str = "", metadata: dict[str, Any] | None = None
    ) -> SessionRecord:
        """Create a session (one committed row) and return it."""
        if isinstance(title, str) and "\x00" in title:
            # PostgreSQL's text cannot hold NUL; refused here rather than as a 500 from it.
            raise BadRequestError("title must not contain the character U+0000 (NUL)")
        metadata = checked_session_fields(title, metadata)
        session_id = new_session_id()
        moment = _now()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO app_sessions (id, title, metadata, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                (session_id, title, Json(metadata), moment, moment),
            )
        when = moment.isoformat(timespec="microseconds")
        return _session(
            {
                "id": session_id,
                "title": title,
                "metadata": metadata,
                "created_at": when,
                "updated_at": when,
                "files": [],
            }
        )

    def get_session(self, session_id: str) -> SessionRecord:
        """The session with its files.

        Raises:
            InvalidNameError: the id is malformed.
            SessionNotFoundError: there is no such live session.
        """
        check_session_id(session_id)
        with self._conn() as conn:
            row = conn.execute(
                _SESSION_SELECT + " WHERE s.id = %s AND s.deleted_at IS NULL", (session_id,)
            ).fetchone()
        if row is None:
            raise SessionNotFoundError(session_id)
        return _session(row)

    def require_session(self, session_id: str) -> None:
        """Check that the live session exists (its row only)."""
        check_session_id(session_id)
        with self._conn() as conn:
            row = conn.execute(
                "SELECT 1 FROM app_sessions WHERE id = %s AND deleted_at IS NULL", (session_id,)
            ).fetchone()
        if row is None:
            raise SessionNotFoundError(session_id)

    def session_ids(self) -> list[str]:
        """Every live session id, oldest first."""
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT id FROM app_sessions WHERE deleted_at IS NULL ORDER BY id"
            ).fetchall()
        return [row["id"] for row in rows]

    def list_sessions(
        self, *, limit: int = 50, after: str | None = None, max_bytes: int | None = None
    ) -> Page:
        """One page of live sessions, oldest first.

        The cursor is the last id seen and ids are time-ordered, so a page is
        ``WHERE id > cursor ORDER BY id LIMIT n`` on any replica: stable while others create
        (new ids sort last) or delete.
        """
        if limit < 1:
            raise BadRequestError(f"limit must be at least 1, not {limit}")
        cursor = "" if after is None else check_session_id(after)
        with self._conn() as conn, conn.transaction():
            # One snapshot for the page and its total.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            rows = conn.execute(
                _SESSION_SELECT + " WHERE s.id > %s AND s.deleted_at IS NULL ORDER BY s.id"
                " LIMIT %s",
                (cursor, limit + 1),
            ).fetchall()
            count = conn.execute("SELECT sum(live) AS n FROM app_session_counts").fetchone()
        total = int(count["n"]) if count else 0
        more = len(rows) > limit
        items: list[SessionRecord] = []
        size = 0
        for row in rows[:limit]:
            session = _session(row)
            if max_bytes is not None:
                # ASCII-escaped JSON bounds the UTF-8 answer from above, as in the local store.
                size += len(json.dumps(session))
                if items and size > max_bytes:
                    return Page(items=items, total=total, next=items[-1]["id"])
            items.append(session)
        return Page(items=items, total=total, next=items[-1]["id"] if more and items else None)

    def iter_all(self) -> Iterator[SessionRecord]:
        """Every live session, oldest first, read page by page."""
        after: str | None = None
        while True:
            page = self.list_sessions(limit=_ITER_BATCH, after=after)
            yield from page.items
            if page.next is None:
                return
            after = page.next

    def delete_session(self, session_id: str, *, reason: str = "delete") -> TrashEntry:
        """Move a session, files and all, to the trash state; audited."""
        check_session_id(session_id)
        moment = _now()
        name = _trash_name(moment, session_id, file=False)
        with self._write() as conn:
            row = conn.execute(
                "UPDATE app_sessions SET deleted_at = %s, deleted_reason = %s, trash_name = %s"
                " WHERE id = %s AND deleted_at IS NULL RETURNING title",
                (moment, reason, name, session_id),
            ).fetchone()
            if row is None:
                raise SessionNotFoundError(session_id)
            self._audit(
                conn, "trash-session", session_id, trash=name, reason=reason, title=row["title"]
            )
        return self._entry(name, "session", session_id, None, moment, reason, row["title"])

    def purge(self) -> list[TrashEntry]:
        """Move every live session to the trash state, in one transaction; one audit row."""
        moment = _now()
        prefix = moment.strftime(_TRASH_TIME_FORMAT) + "-"
        with self._write() as conn:
            rows = conn.execute(
                "UPDATE app_sessions SET deleted_at = %s, deleted_reason = 'purge',"
                " trash_name = %s || id WHERE deleted_at IS NULL RETURNING id, title, trash_name",
                (moment, prefix),
            ).fetchall()
            rows.sort(key=lambda row: row["id"])
            self._audit(
                conn, "purge", self.where, count=len(rows), sessions=[r["id"] for r in rows]
            )
        return [
            self._entry(r["trash_name"], "session", r["id"], None, moment, "purge", r["title"])
            for r in rows
        ]

    def _entry(
        self,
        name: str,
        kind: Literal["session", "file"],
        session_id: str,
        file: str | None,
        deleted_at: datetime,
        reason: str,
        title: str | None = None,
    ) -> TrashEntry:
        # `path` has no meaning here beyond naming the entry (the local backend: a directory).
        return TrashEntry(name, Path(name), kind, session_id, file, deleted_at, reason, title)

    # -- files ------------------------------------------------------------------------

    def list_files(self, session_id: str) -> list[FileEntry]:
        """The live files of a live session: ``name``, ``size``, ``sha256``, ``uploaded_at``."""
        return self.get_session(session_id)["files"]

    def open_file(self, session_id: str, name: str) -> tuple[BinaryIO, FileEntry]:
        """Open a file's object for reading, with its entry; the caller closes it.

        Objects are never changed and a replace or a delete keeps the old one (until
        empty-trash), so the bytes read are those the entry describes.

        Raises:
            SessionNotFoundError, FileNotFoundInSessionError: no such session or file.
            ObjectMissingError: the row names an object that is gone (``app data check``).
        """
        check_session_id(session_id)
        name = check_file_name(name)
        with self._conn() as conn:
            row = conn.execute(
                _FILE_SELECT,
                (name, session_id),
            ).fetchone()
        if row is None:
            raise SessionNotFoundError(session_id)
        if row["name"] is None:
            raise FileNotFoundInSessionError(session_id, name)
        file = ObjectFile(
            self.objects, row["blob"], int(row["size"]), row["uploaded_at"].timestamp(), name
        )
        try:
            file.seek(0)
            file._open(0)  # now, so that a missing object is refused before a response starts
        except BaseException:
            file.close()
            raise
        entry = FileEntry(
            name=row["name"],
            size=int(row["size"]),
            sha256=row["sha256"],
            uploaded_at=row["uploaded_iso"],
        )
        return cast(BinaryIO, file), entry

    def begin_upload(self, session_id: str, name: str, *, replace: bool = False) -> RemoteUpload:
        """Start streaming a file into a session (refused at once if it cannot commit)."""
        check_session_id(session_id)
        name = check_file_name(name)
        self.ensure_held()
        with self._conn() as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM app_files f WHERE f.session_id = s.id"
                "        AND f.deleted_at IS NULL) AS live,"
                "       EXISTS (SELECT 1 FROM app_files f WHERE f.session_id = s.id"
                "        AND f.name = %s AND f.deleted_at IS NULL) AS taken"
                " FROM app_sessions s WHERE s.id = %s AND s.deleted_at IS NULL",
                (name, session_id),
            ).fetchone()
        if row is None:
            raise SessionNotFoundError(session_id)
        if row["taken"] and not replace:
            raise FileExistsInSessionError(session_id, name)
        if not row["taken"] and row["live"] >= self.max_files:
            raise TooManyFilesError(session_id, self.max_files)
        return RemoteUpload(
            self.objects,
            self._record_upload,
            session_id,
            name,
            replace=replace,
            limit=self.max_upload_bytes,
        )

    def put_file(
        self, session_id: str, name: str, data: bytes | Iterable[bytes], *, replace: bool = False
    ) -> FileEntry:
        """Store a whole file at once (bytes, or an iterable of chunks)."""
        with self.begin_upload(session_id, name, replace=replace) as upload:
            for chunk in [data] if isinstance(data, bytes) else data:
                upload.write(chunk)
            return upload.commit()

    def _record_upload(self, upload: RemoteUpload, result: PutResult) -> FileEntry:
        session_id, name = upload.session_id, upload.name
        moment = _now()
        with self._write() as conn:
            self._lock_session(conn, session_id)
            old = conn.execute(
                "SELECT id FROM app_files WHERE session_id = %s AND name = %s"
                " AND deleted_at IS NULL FOR UPDATE",
                (session_id, name),
            ).fetchone()
            if old is not None and not upload.replace:
                raise FileExistsInSessionError(session_id, name)
            trash = None
            if old is None:
                live = conn.execute(
                    "SELECT count(*) AS n FROM app_files WHERE session_id = %s"
                    " AND deleted_at IS NULL",
                    (session_id,),
                ).fetchone()
                if live is not None and live["n"] >= self.max_files:
                    raise TooManyFilesError(session_id, self.max_files)
            else:
                trash = _trash_name(moment, session_id, file=True)
                conn.execute(
                    "UPDATE app_files SET deleted_at = %s, deleted_reason = 'replace',"
                    " trash_name = %s WHERE id = %s",
                    (moment, trash, old["id"]),
                )
            conn.execute(
                "INSERT INTO app_files (session_id, name, blob, size, sha256, uploaded_at)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (session_id, name, result.name, result.size, result.sha256, moment),
            )
            conn.execute(
                "UPDATE app_sessions SET updated_at = %s WHERE id = %s", (moment, session_id)
            )
            if trash is not None:
                self._audit(conn, "replace-file", f"{session_id}/{name}", trash=trash)
        upload.replaced = trash is not None
        return {
            "name": name,
            "size": result.size,
            "sha256": result.sha256,
            "uploaded_at": moment.isoformat(timespec="microseconds"),
        }

    def delete_file(self, session_id: str, name: str) -> TrashEntry:
        """Move one file to the trash state (its object stays); audited."""
        check_session_id(session_id)
        name = check_file_name(name)
        moment = _now()
        trash = _trash_name(moment, session_id, file=True)
        with self._write() as conn:
            self._lock_session(conn, session_id)
            row = conn.execute(
                "UPDATE app_files SET deleted_at = %s, deleted_reason = 'delete', trash_name = %s"
                " WHERE session_id = %s AND name = %s AND deleted_at IS NULL RETURNING id",
                (moment, trash, session_id, name),
            ).fetchone()
            if row is None:
                raise FileNotFoundInSessionError(session_id, name)
            conn.execute(
                "UPDATE app_sessions SET updated_at = %s WHERE id = %s", (moment, session_id)
            )
            self._audit(conn, "trash-file", f"{session_id}/{name}", trash=trash)
        return self._entry(trash, "file", session_id, name, moment, "delete")

    # -- trash ------------------------------------------------------------------------

    def list_trash(self) -> list[TrashEntry]:
        """Every trashed session and file, oldest first."""
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT trash_name, 'session' AS kind, id AS session_id, NULL AS file,"
                "       deleted_at, deleted_reason, title"
                " FROM app_sessions WHERE deleted_at IS NOT NULL"
                " UNION ALL"
                " SELECT trash_name, 'file', session_id, name, deleted_at, deleted_reason, NULL"
                " FROM app_files WHERE deleted_at IS NOT NULL"
                " ORDER BY deleted_at, trash_name"
            ).fetchall()
        return [
            self._entry(
                r["trash_name"],
                "session" if r["kind"] == "session" else "file",
                r["session_id"],
                r["file"],
                r["deleted_at"].astimezone(UTC),
                r["deleted_reason"],
                r["title"],
            )
            for r in rows
        ]

    def restore(self, session_id: str, *, file: str | None = None) -> SessionRecord:
        """Bring a session (or the most recently trashed version of a file) back; audited.

        Raises:
            SessionNotFoundError: nothing to restore (or, for a file, its session is not live:
                restore the session first).
            BadRequestError: a live file has that name again.
        """
        check_session_id(session_id)
        name = None if file is None else check_file_name(file)
        with self._write() as conn:
            if name is None:
                row = conn.execute(
                    "SELECT trash_name FROM app_sessions WHERE id = %s AND deleted_at IS NOT NULL"
                    " FOR NO KEY UPDATE",
                    (session_id,),
                ).fetchone()
                if row is None:
                    raise SessionNotFoundError(session_id, where="the trash")
                conn.execute(
                    "UPDATE app_sessions SET deleted_at = NULL, deleted_reason = NULL,"
                    " trash_name = NULL WHERE id = %s",
                    (session_id,),
                )
                self._audit(conn, "restore-session", session_id, trash=row["trash_name"])
            else:
                self._lock_session(conn, session_id)
                if conn.execute(
                    "SELECT 1 FROM app_files WHERE session_id = %s AND name = %s"
                    " AND deleted_at IS NULL",
                    (session_id, name),
                ).fetchone():
                    raise BadRequestError(
                        f"session {session_id!r} has a file {name!r} again; refusing to "
                        "overwrite it with the copy in the trash. Delete the current one first"
                    )
                row = conn.execute(
                    "SELECT id, trash_name FROM app_files WHERE session_id = %s AND name = %s"
                    " AND deleted_at IS NOT NULL ORDER BY deleted_at DESC, id DESC LIMIT 1"
                    " FOR UPDATE",
                    (session_id, name),
                ).fetchone()
                if row is None:
                    raise SessionNotFoundError(f"{session_id}/{name}", where="the trash")
                conn.execute(
                    "UPDATE app_files SET deleted_at = NULL, deleted_reason = NULL,"
                    " trash_name = NULL WHERE id = %s",
                    (row["id"],),
                )
                conn.execute(
                    "UPDATE app_sessions SET updated_at = %s WHERE id = %s", (_now(), session_id)
                )
                self._audit(conn, "restore-file", f"{session_id}/{name}", trash=row["trash_name"])
        return self.get_session(session_id)

    def empty_trash(
        self, older_than: timedelta | None = None, *, via: str = "command"
    ) -> list[TrashEntry]:
        """Delete trashed rows for good, then their objects: the only way bytes go; audited.

        The rows go first, in one transaction: a crash after it leaves objects that no row
        names, which :meth:`check` removes; the other order could leave rows naming nothing.
        """
        cutoff = datetime.max.replace(tzinfo=UTC) if older_than is None else _now() - older_than
        with self._write() as conn:
            sessions = conn.execute(
                "SELECT id, trash_name, deleted_at, deleted_reason, title FROM app_sessions"
                " WHERE deleted_at <= %s ORDER BY deleted_at, trash_name FOR UPDATE",
                (cutoff,),
            ).fetchall()
            ids = [row["id"] for row in sessions]
            files = conn.execute(
                "DELETE FROM app_files WHERE deleted_at <= %s OR session_id = ANY(%s)"
                " RETURNING blob, trash_name, session_id, name, deleted_at, deleted_reason",
                (cutoff, ids),
            ).fetchall()
            conn.execute("DELETE FROM app_sessions WHERE id = ANY(%s)", (ids,))
            removed = [
                self._entry(
                    r["trash_name"],
                    "session",
                    r["id"],
                    None,
                    r["deleted_at"].astimezone(UTC),
                    r["deleted_reason"],
                    r["title"],
                )
                for r in sessions
            ] + [
                self._entry(
                    r["trash_name"],
                    "file",
                    r["session_id"],
                    r["name"],
                    r["deleted_at"].astimezone(UTC),
                    r["deleted_reason"],
                )
                for r in files
                if r["trash_name"] is not None
            ]
            removed.sort(key=lambda e: (e.deleted_at, e.name))
            self._audit(
                conn,
                "empty-trash",
                self.trash_location,
                count=len(removed),
                entries=[e.name for e in removed],
                objects=len(files),
                older_than=None if older_than is None else older_than.total_seconds(),
                via=via,
            )
        try:
            self.objects.delete(*(row["blob"] for row in files))
        except Exception as error:  # the rows are gone, so the trash is emptied all the same
            log.warning(
                "trash emptied, but some objects remain (%s); `app data check` removes them", error
            )
        return removed

    # -- consistency --------------------------------------------------------------------

    def check(self, *, repair: bool = False, thorough: bool = True) -> CheckReport:
        """Reconcile rows and objects.

        Finds objects that no row names and that are older than ``orphan_grace`` (an upload
        whose transaction never committed: nobody ever saw them, so ``repair`` deletes them),
        and, with ``thorough``, rows whose object is missing (bytes lost outside the app:
        reported, never repaired, since only a backup has them).
        """
        if repair:
            self.ensure_held()
        # Only a maintenance command holds the database exclusively. Under a replica's shared
        # hold, an object without a row may be another replica's upload still streaming (for
        # longer than orphan_grace, on a slow link): deleting it would lose that upload. Row
        # and object switch atomically, so a replica's start-up has nothing to finish; it
        # skips the scan, which lists every object.
        exclusive = self.kind == "maintenance"
        if not thorough and not exclusive:
            return CheckReport([], repair)
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT blob, session_id, name, deleted_at IS NOT NULL AS trashed FROM app_files"
            ).fetchall()
        referenced = {row["blob"] for row in rows}
        findings: list[Finding] = []
        orphans = self.objects.orphans(referenced, older_than=self.orphan_grace)
        for info in orphans:
            findings.append(
                Finding(
                    "object-without-record",
                    info.name,
                    f"object {info.name} ({info.size} bytes, written "
                    f"{info.last_modified:%Y-%m-%d %H:%M:%S}) is named by no row: an upload "
                    "whose transaction never committed",
                    "delete the object (nobody could ever read it)"
                    if exclusive
                    else "`app data check --repair` deletes it once no replica is live "
                    "(a live replica may still be uploading it)",
                )
            )
        if not exclusive:
            orphans = []
        if thorough:
            present = {info.name for info in self.objects.objects(BLOBS)}
            for row in rows:
                if row["blob"] not in present:
                    state = "a trashed version of" if row["trashed"] else "the live"
                    findings.append(
                        Finding(
                            "record-without-object",
                            f"{row['session_id']}/{row['name']}",
                            f"the row for {state} file {row['name']!r} of session "
                            f"{row['session_id']} names object {row['blob']}, which is missing",
                            "nothing: the bytes are gone; restore them from a backup of the "
                            "object store, or delete the file",
                        )
                    )
        if repair and orphans:
            self.objects.delete(*(info.name for info in orphans))
            findings = [
                Finding(f.problem, f.target, f.detail, f.repair, True)
                if f.problem == "object-without-record"
                else f
                for f in findings
            ]
        if repair and findings:
            self.audit("check-repair", self.where, findings=[f.to_dict() for f in findings])
        return CheckReport(findings, repair)
