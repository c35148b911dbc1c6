"""The trash of :class:`app.remote.store.RemoteStore`: rows in the trash state, and their objects.

Deleting a session or a file only sets its row's trash state; the objects stay until
:meth:`RemoteTrash.empty` deletes the rows (and then the objects). Every one of these is
audited in the transaction of the change.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from app.errors import (
    AppError,
    NotInTrashError,
    RestoreOverwriteError,
    SessionNotFoundError,
    TrashCopyLostError,
    shell_word,
)
from app.names import check_file_name
from app.remote import pg
from app.remote.db import (
    NAMED_TIME_LENGTH,
    TRASH_TIME_FORMAT,
    Database,
    just_after,
    named_time,
    now,
    trash_entry,
    utc,
)
from app.remote.errors import (
    FileRowOfAnotherShapeError,
    ObjectMissingError,
    TrashedSessionRowOfAnotherShapeError,
    WriteNotStoredError,
)
from app.remote.objects import ObjectStore
from app.remote.rows import (
    FINDING,
    SESSION_ROW,
    content_fault,
    row_fault,
    session_fault,
    updated_sha256,
)
from app.remote.sessions import session_record, session_row
from app.storage import TrashEntry, entry_holds_other
from app.store.ids import check_session_id
from app.store.trash import TRASH_NAME_RE

__all__ = ["RemoteTrash"]

#: The time at the start of a trash entry's name (`named_time`), in SQL, compared bytewise.
_NAMED: Final = f'left(trash_name, {NAMED_TIME_LENGTH}) COLLATE "C"'
#: A file's newest trashed version (or the one in a named entry): ``session_id, name, entry,
#: entry``. Newest by its name's time, as a data root's entries are: by ``deleted_at``, one
#: changed in the database made an older version the one restored (red team 67 on regress).
_TRASHED_FILE = (
    "SELECT id, name, trash_name, blob, size, sha256, deleted_at, content_sha256,"  # noqa: S608
    f" {utc('uploaded_at')} AS uploaded_at FROM app_files"
    ' WHERE session_id = %s AND name = %s COLLATE "default" AND deleted_at IS NOT NULL'
    " AND (%s::text IS NULL OR trash_name = %s)"
    f" ORDER BY {_NAMED} DESC, id DESC LIMIT 1"
)
#: What a file's 404 names (`RemoteTrash.deleted_entry`): ``session_id, name``. It and
#: `_TRASHED_FILE` take the index `pg.TRASHED_INDEX` (red team 70 on regress).
_NEWEST_TRASHED = (
    "SELECT trash_name, deleted_reason FROM app_files WHERE session_id = %s"  # noqa: S608
    ' AND name = %s COLLATE "default" AND deleted_at IS NOT NULL'
    f" ORDER BY {_NAMED} DESC, id DESC LIMIT 1"
)
#: Whether the file is there (live) again: ``session_id, name``.
_LIVE_FILE = (
    "SELECT 1 FROM app_files WHERE session_id = %s"
    ' AND name = %s COLLATE "default" AND deleted_at IS NULL'
)

#: The newest audit row of a change to a file (``<session>/<name>``), for a restore's refusal.
_LAST_FILE_CHANGE = (
    "SELECT operation, detail->>'trash' AS trash FROM app_audit WHERE target = %s"
    " AND operation IN ('restore-file', 'trash-file', 'replace-file') ORDER BY id DESC LIMIT 1"
)

# The backend's logger, shared with app.remote.transfer.
log = logging.getLogger("app.remote.store")


class RemoteTrash:
    """The trashed sessions and files of one database."""

    def __init__(self, db: Database, objects: ObjectStore) -> None:
        self.db = db
        self.objects = objects

    @property
    def location(self) -> str:
        """Where deleted sessions and files are kept, for messages."""
        return (
            f"the trash state of rows in database {self.db.where} (their objects stay in "
            f"{self.objects.where} until empty-trash)"
        )

    def entries(self) -> list[TrashEntry]:
        """Every trashed session and file, oldest first."""
        hashed = self.db.hashed
        with self.db.conn() as conn:
            rows = conn.execute(
                "SELECT trash_name, 'session' AS kind, id AS session_id, NULL AS file,"  # noqa: S608
                "       deleted_at, deleted_reason, title, metadata,"
                f"      {utc('created_at')} AS created_at, content_sha256"
                " FROM app_sessions WHERE deleted_at IS NOT NULL"
                " UNION ALL"
                " SELECT trash_name, 'file', session_id, name, deleted_at, deleted_reason, NULL,"
                "       NULL, NULL, NULL"
                " FROM app_files WHERE deleted_at IS NOT NULL"
                " ORDER BY deleted_at, trash_name"
            ).fetchall()
        for r in rows:
            if r["kind"] == "session" and content_fault(
                {**r, "id": r["session_id"]}, hashed=hashed
            ):
                # Its title was listed as the session's when it was deleted, whatever an
                # edit made it (rows67): listed without it; `app data check` names the row.
                log.warning(
                    "trashed session %s: its row's title is not what its create acknowledged "
                    "(content_sha256); listed without it, and `app data check` names it",
                    r["session_id"],
                )
                r["title"] = None
        listed = [
            trash_entry(
                r["trash_name"],
                "session" if r["kind"] == "session" else "file",
                r["session_id"],
                r["file"],
                _deleted_at(r),
                r["deleted_reason"],
                r["title"],
            )
            for r in rows
        ]
        return sorted(listed, key=lambda e: (e.deleted_at, e.name))

    def restore(
        self, session_id: str, file: str | None, entry: str | None = None
    ) -> tuple[str | None, dict[str, Any]]:
        """Bring a session (or the most recently trashed version of a file, or the one in
        trash entry ``entry``) back; audited. Returns a session's trash entry (``None`` for
        a file), and the session's row as the restore's transaction left it
        (`app.remote.sessions.session_row`): the restore's answer, read before its commit.

        A file's restore reads its session as every read does, and refuses a session that
        is not what its writes acknowledged before it changes anything, as a data root's
        restore does; a session's restore brings it back all the same (red team 61), and the
        caller says it is unreadable (`app.remote.sessions.session_record`).

        Raises:
            SessionNotFoundError: nothing to restore (or, for a file, its session is not live:
                restore the session first).
            BadRequestError: a live file has that name again.
        """
        check_session_id(session_id)
        hashed = self.db.hashed  # read before the restore's transaction (its own read)
        if file is None:
            return self._restore_session(session_id, entry)
        return None, self._restore_file(session_id, check_file_name(file), entry, hashed)

    def _not_there(self, conn: Any, entry: str, session_id: str, file: str | None) -> AppError:
        """Why trash entry ``entry`` gives nothing to restore: it holds something else (named,
        with the command that restores it), or there is no such entry."""
        held = self._held(conn, entry)
        if held is None:
            return NotInTrashError(session_id, file, entry=entry)
        return entry_holds_other(entry, held[0], held[1], session_id, file)

    @staticmethod
    def _held(conn: Any, entry: str) -> tuple[str, str | None] | None:
        """The session (and file) trash entry ``entry`` holds; None if there is none."""
        held = conn.execute(
            "SELECT id AS session_id, NULL AS file FROM app_sessions WHERE trash_name = %s"
            " UNION ALL SELECT session_id, name FROM app_files WHERE trash_name = %s",
            (entry, entry),
        ).fetchone()
        return None if held is None else (held["session_id"], held["file"])

    @staticmethod
    def _refuse_unnamed(entry: str | None, session_id: str, file: str | None) -> None:
        """Refuse an entry name no entry of either backend has, before the database sees it.

        Given to PostgreSQL, a name of bytes that are not UTF-8 (``--entry $'\\xff'``) or
        with a NUL was a traceback, exit 1, where the local store says there is no such entry
        (red team 45).
        """
        if entry is not None and TRASH_NAME_RE.fullmatch(entry) is None:
            raise NotInTrashError(session_id, file, entry=entry)

    def _restore_session(self, session_id: str, entry: str | None) -> tuple[str, dict[str, Any]]:
        self._refuse_unnamed(entry, session_id, None)
        with self.db.write(f"the restore of session {session_id}") as conn:
            row = conn.execute(
                "SELECT trash_name, updated_at, deleted_at, metadata FROM app_sessions"
                " WHERE id = %s"
                " AND deleted_at IS NOT NULL AND (%s::text IS NULL OR trash_name = %s)"
                " FOR NO KEY UPDATE",
                (session_id, entry, entry),
            ).fetchone()
            if row is None and entry is not None:
                raise self._not_there(conn, entry, session_id, None)
            if row is None:
                # As the local store says it (red team 71 on integrity): a SessionNotFoundError
                # slipped past `app sessions restore`'s look for a live session, so a restore
                # run again after its lost output was told to look in the trash.
                raise NotInTrashError(session_id)
            # A row a tool rewrote in the trash: made live and audited, then unreadable, the
            # restore failed on a session it had taken out of the trash (red team 61).
            fault = session_fault(row["metadata"])
            if fault is not None:
                raise TrashedSessionRowOfAnotherShapeError(
                    session_id, fault, file=SESSION_ROW, finding=FINDING
                )
            # Dated after its every change and its delete, as a change of its files is
            # (`Database.change`): left as it was, a restored session read as last changed
            # before its delete, and a client that looks for the sessions changed since the
            # newest `updated_at` it saw never saw it come back (red team 59).
            moment = now()
            for earlier in (row["updated_at"], named_time(row["trash_name"], row["deleted_at"])):
                if earlier is not None:
                    moment = max(moment, just_after(earlier))
            restored = conn.execute(
                "UPDATE app_sessions SET deleted_at = NULL, deleted_reason = NULL,"
                " trash_name = NULL, updated_at = %s, updated_sha256 = %s WHERE id = %s",
                (
                    moment,
                    updated_sha256(session_id, moment.isoformat(timespec="microseconds")),
                    session_id,
                ),
            )
            what = f"the restore of session {session_id}"
            pg.stored(restored, self.db.where, what, "app_sessions", "UPDATE of")
            self.db.audit(conn, "restore-session", session_id, trash=row["trash_name"])
            # Read once every trigger deferred to the commit has fired: read before, a
            # restore that one of another's undid there was answered as made (red team 68
            # on regress).
            conn.execute(pg.FIRE_DEFERRED.encode())
            read = session_row(conn, session_id)
            if read is None:  # a trigger of another's undid it: refused, rolled back
                raise WriteNotStoredError(
                    self.db.where, what, "app_sessions", "UPDATE of", after=True
                )
        return str(row["trash_name"]), read

    def _restore_file(
        self, session_id: str, name: str, entry: str | None, hashed: bool
    ) -> dict[str, Any]:
        try:
            return self._restore_file_into(session_id, name, entry, hashed)
        except RestoreOverwriteError as refused:
            # Where the newest change to the file is a restore, said so (see the local
            # store's `_restored_last`): a restore run again after its output was lost was
            # told to delete the file and restore an older copy (red team 71 on integrity).
            # Looked up once the session's row is let go: app_audit is read whole.
            made = self._restored_last(f"{session_id}/{name}")
            if made is None:
                raise
            raise RestoreOverwriteError(
                session_id, name, refused.copy, entry=refused.entry, restored=made
            ) from None
        except SessionNotFoundError as missing:
            # The session itself is not live: where it is in the trash, said so with its
            # entry, as the local store says it (red team 45: "`app sessions list` shows the
            # sessions", which does not show a deleted one).
            if type(missing) is not SessionNotFoundError or missing.where != "sessions":
                raise
            trashed = self.deleted_entry(session_id)
            if trashed is None:
                raise
            raise SessionNotFoundError(session_id, in_trash=trashed) from None

    def _restored_last(self, target: str) -> str | None:
        """The trash entry of the restore of ``target`` (``<session>/<name>``) where it is
        the newest audit row of a change to that file; None otherwise, or where the database
        cannot say now (the refusal stands as it is)."""
        try:
            with self.db.conn() as conn:
                last = conn.execute(_LAST_FILE_CHANGE, (target,)).fetchone()
        except AppError:
            return None
        if last is None or last["operation"] != "restore-file":
            return None
        return str(last["trash"]) if last["trash"] is not None else None

    def deleted_entry(self, session_id: str, file: str | None = None) -> str | None:
        """The trash entry of the deleted session ``session_id`` (or the newest of its
        ``file``, as a restore finds it); None where it is not deleted, or the database
        cannot say now (the request's own refusal stands)."""
        try:
            with self.db.conn() as conn:
                if file is None:
                    trashed = conn.execute(
                        "SELECT trash_name FROM app_sessions"
                        " WHERE id = %s AND deleted_at IS NOT NULL",
                        (session_id,),
                    ).fetchone()
                else:
                    trashed = conn.execute(_NEWEST_TRASHED, (session_id, file)).fetchone()
                    if trashed is not None and trashed["deleted_reason"] != "delete":
                        return None  # its newest version replaced: not its DELETE's
        except AppError:
            return None
        return None if trashed is None else str(trashed["trash_name"])

    def _restore_file_into(
        self, session_id: str, name: str, entry: str | None, hashed: bool
    ) -> dict[str, Any]:
        what = f"the restore of {name!r} into session {session_id}"
        answer: list[dict[str, Any]] = []
        restored_id: list[object] = []

        def read(conn: Any) -> None:
            # The session as the restore leaves it, its new updated_at written, read and
            # checked before the commit: one not what its writes acknowledged refuses the
            # restore with nothing changed, as a data root's does (it reads session.json
            # before its move). Every trigger deferred to the commit has fired: the file
            # put back in the trash by one of another's was answered as restored (red team
            # 68 on regress).
            back = conn.execute(
                "SELECT 1 FROM app_files WHERE id = %s AND deleted_at IS NULL", restored_id
            ).fetchone()
            if back is None:
                raise WriteNotStoredError(self.db.where, what, "app_files", "UPDATE of", after=True)
            row = session_row(conn, session_id)
            if row is None:
                raise WriteNotStoredError(
                    self.db.where, what, "app_sessions", "UPDATE of", after=True
                )
            session_record(row, hashed=hashed)
            answer.append(row)

        if entry is not None:
            # Before the session is looked at, as the local store does: a named entry of the
            # deleted session itself (or of another session's file) was "no session ... in
            # sessions", 66, without a word of what the entry holds (red team 45).
            self._refuse_unnamed(entry, session_id, name)
            with self.db.conn() as conn:
                held = self._held(conn, entry)
            if held is not None and held != (session_id, name):
                raise entry_holds_other(entry, held[0], held[1], session_id, name)
        # The copy is read whole before the session's row is locked (a replica's changes to
        # the session wait on that lock, database_lock_wait_seconds at most). Only a copy
        # found whole counts: any other (damaged, or emptied from the trash meanwhile) is
        # looked at again under the lock, which says which.
        verified = None
        with self.db.conn() as conn:
            candidate = conn.execute(_TRASHED_FILE, (session_id, name, entry, entry)).fetchone()
            live = conn.execute(_LIVE_FILE, (session_id, name)).fetchone()
        fault = None if candidate is None else row_fault(candidate, hashed=self.db.hashed)
        if fault is not None:
            # Its copy read against a SHA-256 in capitals (or a key another file's) was "lost"
            # or "damaged", of sound bytes (red team 60): the row is what is not the app's.
            raise FileRowOfAnotherShapeError(
                session_id, name, fault, action="restore", outcome="nothing was changed"
            )
        if candidate is not None and live is None:  # a file there again is refused unread
            whole = self._damage(candidate["blob"], candidate["size"], candidate["sha256"])
            verified = candidate["id"] if whole is None else None
        with self.db.change(session_id, what, then=read) as (conn, _):
            row = conn.execute(
                _TRASHED_FILE + " FOR UPDATE", (session_id, name, entry, entry)
            ).fetchone()
            # A named entry that is not there is said first, as the local store says it.
            if row is None and entry is not None:
                raise self._not_there(conn, entry, session_id, name)
            if conn.execute(_LIVE_FILE, (session_id, name)).fetchone():
                raise RestoreOverwriteError(
                    session_id, name, entry=None if row is None else row["trash_name"]
                )
            if row is None:
                raise NotInTrashError(session_id, name)  # as the local store words it
            if verified != row["id"] or not self.objects.exists(row["blob"]):
                self._refuse_damaged(conn, row, session_id, name, entry)
            restored = conn.execute(
                "UPDATE app_files SET deleted_at = NULL, deleted_reason = NULL,"
                " trash_name = NULL WHERE id = %s",
                (row["id"],),
            )
            pg.stored(restored, self.db.where, what, "app_files", "UPDATE of")
            restored_id.append(row["id"])
            self.db.audit(conn, "restore-file", f"{session_id}/{name}", trash=row["trash_name"])
        return answer[0]

    def _refuse_damaged(
        self, conn: Any, row: Any, session_id: str, name: str, entry: str | None
    ) -> None:
        """Refuse the restore of ``row``'s copy where its object is gone or was rewritten.

        Its object deleted behind the app, the row was made the file again and the restore
        answered as done; every download of it was then refused (red team 36). Rewritten
        with as many other bytes, it came back under the acknowledged SHA-256: the local
        store reads its copy once since red team 45, and so does this.
        """
        damage = self._damage(row["blob"], row["size"], row["sha256"])
        if damage is None:
            return
        older = None
        if entry is None:
            older = conn.execute(
                "SELECT trash_name FROM app_files WHERE session_id = %s"  # noqa: S608
                ' AND name = %s COLLATE "default"'
                f" AND deleted_at IS NOT NULL AND ({_NAMED}, id) < (%s, %s)"
                f" ORDER BY {_NAMED} DESC, id DESC LIMIT 1",
                (session_id, name, row["trash_name"][:NAMED_TIME_LENGTH], row["id"]),
            ).fetchone()
        raise TrashCopyLostError(
            session_id,
            name,
            row["trash_name"],
            object_store=self.objects.where,
            damage=damage,
            asked=entry is not None,
            older=None if older is None else older["trash_name"],
        )

    def _damage(self, blob: str, size: int, sha256: str) -> str | None:
        """What is wrong with a trashed file's object, read once whole: None where it holds
        the bytes acknowledged (their size and SHA-256)."""
        try:
            stream = self.objects.get(blob)
        except ObjectMissingError:
            return "has lost its bytes"
        digest = hashlib.sha256()
        with stream:
            if stream.size != size:
                return f"holds {stream.size} bytes, where {size} were acknowledged"
            mismatch = stream.hash_into(digest)
            if mismatch is not None:  # red team 57
                return (
                    f"holds bytes that the store's own checksum of them does not match "
                    f"({mismatch}): damaged on its disks, or changed on the way"
                )
        found = digest.hexdigest()
        if found != sha256:
            return f"holds bytes whose SHA-256 is {found}, where {sha256} was acknowledged"
        return None

    def empty(
        self, older_than: timedelta | None, *, via: str
    ) -> tuple[list[TrashEntry], int, AppError | None]:
        """Delete trashed rows for good, then their objects: the only way bytes go; audited.

        The rows go first, in one transaction: a crash after it leaves objects that no row
        names, which the check removes; the other order could leave rows naming nothing.

        Returns:
            The entries removed, how many objects their rows named, and the object store's
            refusal of their deletion (None where it deleted them).
        """
        cutoff = datetime.max.replace(tzinfo=UTC) if older_than is None else now() - older_than
        # Older by its name's time too (`named_time`): by its deleted_at alone, one changed
        # in the database was deleted for good a second after its delete (red team 67 on
        # regress). Both must say so: a tool's name without a time is compared as it reads.
        named = cutoff.strftime(TRASH_TIME_FORMAT)
        with self.db.write("the emptying of the trash") as conn:
            sessions = conn.execute(
                "SELECT id, trash_name, deleted_at, deleted_reason, title FROM app_sessions"
                ' WHERE deleted_at <= %s AND left(trash_name, %s) COLLATE "C" <= %s'
                " ORDER BY deleted_at, trash_name FOR UPDATE",
                (cutoff, NAMED_TIME_LENGTH, named),
            ).fetchall()
            ids = [row["id"] for row in sessions]
            files = conn.execute(
                "DELETE FROM app_files WHERE (deleted_at <= %s AND left(trash_name, %s)"
                ' COLLATE "C" <= %s) OR session_id = ANY(%s)'
                " RETURNING blob, trash_name, session_id, name, deleted_at, deleted_reason",
                (cutoff, NAMED_TIME_LENGTH, named, ids),
            ).fetchall()
            conn.execute("DELETE FROM app_sessions WHERE id = ANY(%s)", (ids,))
            removed = [
                trash_entry(
                    r["trash_name"],
                    "session",
                    r["id"],
                    None,
                    _deleted_at(r),
                    r["deleted_reason"],
                    r["title"],
                )
                for r in sessions
            ] + [
                trash_entry(
                    r["trash_name"],
                    "file",
                    r["session_id"],
                    r["name"],
                    _deleted_at(r),
                    r["deleted_reason"],
                )
                for r in files
                if r["trash_name"] is not None
            ]
            removed.sort(key=lambda e: (e.deleted_at, e.name))
            # Only the keys the app makes: a row a tool wrote naming another (`blobs//<hex>`,
            # which SeaweedFS stores as another file's `blobs/<hex>`; the stamp object) had
            # that key deleted, another file's acknowledged bytes or the prefix's stamp (red
            # team 60). The audit counts the objects deleted: it counted those kept too, as
            # deleted (red team 61).
            foreign = [row for row in files if not self.objects.is_blob_name(row["blob"])]
            doomed = [row["blob"] for row in files if self.objects.is_blob_name(row["blob"])]
            self.db.audit(
                conn,
                "empty-trash",
                self.location,
                count=len(removed),
                entries=[e.name for e in removed],
                objects=len(doomed),
                kept_objects=[row["blob"] for row in foreign],
                older_than=None if older_than is None else older_than.total_seconds(),
                via=via,
            )
        refused: AppError | None = None
        for row in foreign:
            log.warning(
                "the trash's row of file %r of session %s named object %r, not one the app "
                "makes (a tool or an edit wrote it): the row is gone, the object is kept "
                "(it may be another file's, or the prefix's stamp); delete it by hand if it "
                "is no one's",
                row["name"],
                row["session_id"],
                row["blob"],
            )
        try:
            self.objects.delete(*doomed)
        except Exception as error:  # the rows are gone, so the trash is emptied all the same
            refused = error if isinstance(error, AppError) else None
            log.warning(
                "trash emptied, but some objects remain (%s); `app data check --repair` "
                "removes them",
                error,
            )
        if doomed and refused is None:
            self._versions_kept(len(doomed))
        return removed, len(doomed), refused

    def _versions_kept(self, deleted: int) -> None:
        """Say so where the bucket keeps versions: the objects are deleted, their bytes are
        not. `empty-trash`, "the only command that removes bytes", said only that it removed
        the entries, of bytes still in the bucket, billed and readable by whoever may read
        versions (versioning on, as the how-to advises for backups; red team 64)."""
        status = self.objects.keeps_versions()
        if status is None:
            return
        location = self.objects.location
        log.warning(
            "the trash's %d object%s %s deleted, but bucket %r keeps versions (versioning "
            "%s): %s bytes stay in it as noncurrent versions, billed and readable by whoever "
            "may read versions, until a lifecycle rule that expires noncurrent versions "
            "(NoncurrentVersionExpiration) or a delete of each version removes them (`aws "
            "s3api list-object-versions --bucket %s --prefix %s` lists them); Object Lock's "
            "retention, where the bucket has it, keeps them until it ends",
            deleted,
            "" if deleted == 1 else "s",
            "is" if deleted == 1 else "are",
            location.bucket,
            status,
            "its" if deleted == 1 else "their",
            shell_word(location.bucket),
            shell_word(location.key("blobs/")),
        )


def _deleted_at(row: dict[str, Any]) -> datetime:
    """A trashed row's deletion time as its entry's name gives it (`named_time`), with a word
    in the log where its ``deleted_at`` says another (changed in the database)."""
    column = row["deleted_at"].astimezone(UTC)
    named = named_time(row["trash_name"], column)
    if named != column:
        log.warning(
            "trash entry %s: its row's deleted_at (%s) is not the time its name gives; "
            "listed and emptied by its name's, as a data root's are",
            row["trash_name"],
            column.isoformat(),
        )
    return named
