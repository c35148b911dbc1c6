"""The files of :class:`app.remote.store.RemoteStore`: rows of ``app_files`` naming objects.

An upload streams straight to a fresh, immutable object (:mod:`app.remote.transfer`); the
row that names it is inserted in one transaction when the upload commits. A replace switches
in that same transaction: the old row goes to the trash state and the new one becomes the
live row; a unique index allows one live file per name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, BinaryIO, Final, cast

from app.digests import Digests
from app.errors import (
    DamagedFileError,
    FileExistsInSessionError,
    FileNotFoundInSessionError,
    SessionNotFoundError,
    TooManyFilesError,
)
from app.names import check_file_name
from app.remote import pg
from app.remote.db import Database, trash_entry, trash_name, utc
from app.remote.errors import (
    FileRowOfAnotherShapeError,
    ObjectStoreUnavailableError,
    WriteNotStoredError,
)
from app.remote.objects import ObjectStore, PutResult
from app.remote.rows import row_fault
from app.remote.transfer import ObjectFile, RemoteUpload
from app.storage import FileEntry, IfMatch, TrashEntry
from app.store.ids import check_session_id
from app.store.records import record_sha256

__all__ = ["RemoteFiles"]

# Every lookup of a file by its name compares in the database's own collation (`COLLATE
# "default"`, which PostgreSQL keeps deterministic: equal only if the same bytes), whatever
# the column's: one made case-insensitive (nondeterministic) under a live replica had a PUT
# of `a.txt` replace the acknowledged `A.txt` (red team 63); the open refuses such a column.
# On the app's own column it is the index's collation, so the index serves it as before
# (`COLLATE "C"` made every lookup read each of the session's rows).
_FILE_SELECT: Final = f"""
SELECT s.id AS session, f.name, f.size, f.sha256, f.blob, f.uploaded_at,
       {utc("f.uploaded_at")} AS uploaded_iso, f.content_sha256
FROM app_sessions s LEFT JOIN app_files f
  ON f.session_id = s.id AND f.name = %s COLLATE \"default\" AND f.deleted_at IS NULL
WHERE s.id = %s AND s.deleted_at IS NULL
"""  # noqa: S608 (formatted from constants only)


class RemoteFiles:
    """The files of one database's sessions, their bytes in one object prefix.

    Args:
        max_upload_bytes: the largest file accepted.
        max_files: the most live files one session may hold.
    """

    def __init__(
        self,
        db: Database,
        objects: ObjectStore,
        *,
        max_upload_bytes: int,
        max_files: int,
    ) -> None:
        self.db = db
        self.objects = objects
        self.max_upload_bytes = max_upload_bytes
        self.max_files = max_files

    def open(self, session_id: str, name: str) -> tuple[BinaryIO, FileEntry]:
        """Open a file's object for reading, with its entry; the caller closes it.

        Objects are never changed and a replace or a delete keeps the old one (until
        empty-trash), so the bytes read are those the entry describes.
        """
        check_session_id(session_id)
        name = check_file_name(name)
        row = self._live_row(session_id, name)
        while True:
            try:
                return self._open_row(session_id, name, row)
            except DamagedFileError:
                # Its object gone, or of another size: damage from outside the app, unless
                # the file was deleted or replaced, and the trash emptied, by another replica
                # since its row was read. That was a 500 "missing from the object store"
                # that `check` could not find (red team 49): it is answered as it is now.
                again = self._live_row(session_id, name)
                if again["blob"] == row["blob"]:
                    raise
                row = again

    def _live_row(self, session_id: str, name: str) -> Any:
        with self.db.conn() as conn:
            row = conn.execute(_FILE_SELECT, (name, session_id)).fetchone()
        if row is None:
            raise SessionNotFoundError(session_id)
        if row["name"] is None:
            raise FileNotFoundInSessionError(session_id, name)
        return row

    def _open_row(self, session_id: str, name: str, row: Any) -> tuple[BinaryIO, FileEntry]:
        # A row a tool wrote (a SHA-256 in capitals or no hex, a negative size): its download
        # was a 500 internal_error or cut before its last byte (red team 60).
        fault = row_fault(row, hashed=self.db.hashed)
        if fault is not None:
            raise FileRowOfAnotherShapeError(session_id, name, fault)
        file = ObjectFile(
            self.objects,
            row["blob"],
            int(row["size"]),
            row["uploaded_at"].timestamp(),
            name,
            session_id,
        )
        try:
            file.seek(0)
            file._open(0)  # now, so that a missing object is refused before a response starts
        except ObjectStoreUnavailableError as error:
            file.close()
            # The store's own words name the store, not what it refused (red team 27: a
            # stopped store's read timeout read "check the credentials").
            # Its own kind kept: a clock's refusal keeps the clock's remedy (red team 42).
            raise dataclasses.replace(
                error,
                reason=f"{error.reason}; the download of {name!r} from session {session_id} "
                "was not begun: retry once the object store answers",
            ) from error
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

    def begin_upload(
        self,
        session_id: str,
        name: str,
        *,
        replace: bool,
        if_match: IfMatch | None = None,
        digests: Digests | None = None,
    ) -> RemoteUpload:
        """Start streaming a file into a session (refused at once if it cannot commit)."""
        check_session_id(session_id)
        name = check_file_name(name)
        self.db.ensure_held()
        with self.db.conn() as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM app_files f WHERE f.session_id = s.id"
                "        AND f.deleted_at IS NULL) AS live,"
                "       EXISTS (SELECT 1 FROM app_files f WHERE f.session_id = s.id"
                '        AND f.name = %s COLLATE "default" AND f.deleted_at IS NULL) AS taken,'
                "       (SELECT f.sha256 FROM app_files f WHERE f.session_id = s.id"
                '        AND f.name = %s COLLATE "default" AND f.deleted_at IS NULL) AS sha256'
                " FROM app_sessions s WHERE s.id = %s AND s.deleted_at IS NULL",
                (name, name, session_id),
            ).fetchone()
        if row is None:
            raise SessionNotFoundError(session_id)
        if if_match is not None:
            # Before the body too, so a stale client is not made to send it for nothing.
            sent = None if digests is None else digests.named()
            current = row["sha256"] if row["taken"] else None
            if_match.require("PUT", session_id, name, current, sent)
        if row["taken"] and not replace:
            raise FileExistsInSessionError(session_id, name)
        if not row["taken"] and row["live"] >= self.max_files:
            raise TooManyFilesError(session_id, self.max_files, row["live"])
        return RemoteUpload(
            self.objects,
            self._record_upload,
            session_id,
            name,
            replace=replace,
            limit=self.max_upload_bytes,
            if_match=if_match,
            digests=digests,
        )

    def put(
        self, session_id: str, name: str, data: bytes | Iterable[bytes], *, replace: bool
    ) -> FileEntry:
        """Store a whole file at once (bytes, or an iterable of chunks)."""
        with self.begin_upload(session_id, name, replace=replace) as upload:
            for chunk in [data] if isinstance(data, bytes) else data:
                upload.write(chunk)
            return upload.commit()

    def _record_upload(self, upload: RemoteUpload, result: PutResult) -> FileEntry:
        session_id, name = upload.session_id, upload.name
        what = f"the upload of {name!r} into session {session_id}"
        retired: list[Any] = []

        def in_the_trash(conn: Any) -> None:
            # The version it replaced in the trash too, at the commit point, every trigger
            # run (one after the session's own update among them): a trigger after the
            # update that took that row away (an archiving tool's) had the replace answered
            # 200 and audited of a version no entry held (red team 69 on integrity).
            pg.trashed(conn, self.db.where, what, "app_files", retired, moment)

        with self.db.change(session_id, what, file=name, settled=in_the_trash) as (conn, moment):
            old = conn.execute(
                "SELECT id, sha256 FROM app_files WHERE session_id = %s"
                ' AND name = %s COLLATE "default"'
                " AND deleted_at IS NULL FOR UPDATE",
                (session_id, name),
            ).fetchone()
            if upload.if_match is not None:
                # In the transaction that switches the row, after `change` locked the
                # session's row (every write to its files does): the version compared is
                # the one this commit replaces.
                current = None if old is None else old["sha256"]
                upload.if_match.require("PUT", session_id, name, current, result.sha256)
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
                    raise TooManyFilesError(session_id, self.max_files, live["n"])
            else:
                trash = trash_name(moment, session_id, file=True)
                replaced = conn.execute(
                    "UPDATE app_files SET deleted_at = %s, deleted_reason = 'replace',"
                    " trash_name = %s WHERE id = %s",
                    (moment, trash, old["id"]),
                )
                pg.stored(replaced, self.db.where, what, "app_files", "UPDATE of")
            acknowledged = {
                "name": name,
                "size": result.size,
                "sha256": result.sha256,
                "uploaded_at": moment.isoformat(timespec="microseconds"),
            }
            # Its upload time covered as the local record's is (session 67: one changed in
            # the database was every listing's and the session's updated_at).
            inserted = conn.execute(
                "INSERT INTO app_files"
                " (session_id, name, blob, size, sha256, uploaded_at, content_sha256)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    session_id,
                    name,
                    result.name,
                    result.size,
                    result.sha256,
                    moment,
                    record_sha256(acknowledged),
                ),
            )
            pg.stored(inserted, self.db.where, what, "app_files")
            if trash is not None:
                self.db.audit(conn, "replace-file", f"{session_id}/{name}", trash=trash)
            # The row as written once every trigger after it has run, deferred ones too (red
            # team 62 on regress: one after each insert that deleted the row had the upload
            # answered 201, then its bytes deleted as no row's).
            conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
            kept = conn.execute(
                "SELECT blob, size, sha256 FROM app_files WHERE session_id = %s"
                ' AND name = %s COLLATE "default"'
                " AND deleted_at IS NULL",
                (session_id, name),
            ).fetchall()
            if [(k["blob"], k["size"], k["sha256"]) for k in kept] != [
                (result.name, result.size, result.sha256)
            ]:
                raise WriteNotStoredError(self.db.where, what, "app_files", after=True)
            if old is not None:
                retired.append(old["id"])
        upload.replaced = trash is not None
        return cast(FileEntry, acknowledged)

    def delete(self, session_id: str, name: str, *, if_match: IfMatch | None = None) -> TrashEntry:
        """Move one file to the trash state (its object stays; only a version ``if_match``
        names); audited."""
        check_session_id(session_id)
        name = check_file_name(name)
        what = f"the delete of {name!r} from session {session_id}"
        deleted: list[Any] = []

        def in_the_trash(conn: Any) -> None:
            # At the commit point, every trigger run: one after the update that took the row
            # away (an archiving tool's) had the delete answered with an entry that held
            # nothing (red team 69 on integrity).
            pg.trashed(conn, self.db.where, what, "app_files", deleted, moment)

        with self.db.change(session_id, what, file=name, settled=in_the_trash) as (conn, moment):
            trash = trash_name(moment, session_id, file=True)
            if if_match is not None:
                found = conn.execute(
                    "SELECT sha256 FROM app_files WHERE session_id = %s"
                    ' AND name = %s COLLATE "default"'
                    " AND deleted_at IS NULL",
                    (session_id, name),
                ).fetchone()
                if_match.require(
                    "DELETE", session_id, name, None if found is None else found["sha256"]
                )
            row = conn.execute(
                "UPDATE app_files SET deleted_at = %s, deleted_reason = 'delete', trash_name = %s"
                ' WHERE session_id = %s AND name = %s COLLATE "default" AND deleted_at IS NULL'
                " RETURNING id",
                (moment, trash, session_id, name),
            ).fetchone()
            if row is None:
                where, condition = self.db.where, 'session_id = %s AND name = %s COLLATE "default"'
                pg.skipped(conn, where, what, "app_files", condition, (session_id, name))
                raise FileNotFoundInSessionError(session_id, name)
            deleted.append(row["id"])
            self.db.audit(conn, "trash-file", f"{session_id}/{name}", trash=trash)
        return trash_entry(trash, "file", session_id, name, moment, "delete")
