"""The sessions of :class:`app.remote.store.RemoteStore`: rows of ``app_sessions``.

A session's files are read in the statement that reads the session, so that both come from
one snapshot. Ids are time-ordered, so a page is ``WHERE id > cursor ORDER BY id LIMIT n``
on any replica.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any, Final, cast

from psycopg.types.json import Json

from app.errors import BadRequestError, SessionNotFoundError, UnreadableSessionError
from app.remote import pg
from app.remote.db import TRASH_TIME_FORMAT, Database, now, trash_entry, trash_name, utc
from app.remote.errors import WriteNotStoredError
from app.remote.pg import CREATE_LOCK
from app.remote.rows import (
    CONTENT_FINDING,
    FINDING,
    SESSION_ROW,
    UPDATED_KEY,
    content_fault,
    content_sha256,
    row_fault,
    say_left_out,
    session_fault,
    updated_fault,
    updated_sha256,
)
from app.storage import (
    LEFT_OUT_UNREADABLE,
    LeftOut,
    Page,
    SessionRecord,
    TrashEntry,
    checked_session_fields,
)
from app.store.ids import check_session_id, make_later_than, new_session_id
from app.store.records import CONTENT_KEY

__all__ = ["RemoteSessions", "session_record", "session_row"]

log = logging.getLogger("app.remote.store")

_ITER_BATCH: Final = 500

_FILE_JSON: Final = (
    "json_build_object('name', f.name, 'size', f.size, 'sha256', f.sha256, "
    f"'uploaded_at', {utc('f.uploaded_at')}, 'blob', f.blob, 'content_sha256', f.content_sha256)"
)
# One statement per read, so that a session and its files come from one snapshot.
_SESSION_SELECT: Final = f"""
SELECT s.id, s.title, s.metadata, {utc("s.created_at")} AS created_at,
       {utc("s.updated_at")} AS updated_at, s.content_sha256, s.updated_sha256,
       coalesce((SELECT json_agg({_FILE_JSON} ORDER BY f.uploaded_at, f.name)
                 FROM app_files f WHERE f.session_id = s.id AND f.deleted_at IS NULL),
                '[]'::json) AS files
FROM app_sessions s
"""  # noqa: S608 (formatted from constants only)


#: What a file's row the session's read gives is not part of its entry.
_NOT_ANSWERED: Final = frozenset({"blob", CONTENT_KEY})


def _session(row: dict[str, Any], *, hashed: bool) -> SessionRecord:
    damage = session_fault(row.get("metadata"))
    if damage is not None:
        raise UnreadableSessionError(row["id"], damage, file=SESSION_ROW, finding=FINDING)
    # Its title, metadata, id and creation time as its create acknowledged them, where the
    # row keeps their SHA-256 (session 66: one changed in the database was served).
    changed = content_fault(row, hashed=hashed) or updated_fault(row, hashed=hashed)
    if changed is not None:
        raise UnreadableSessionError(row["id"], changed, file=SESSION_ROW, finding=CONTENT_FINDING)
    row = {key: value for key, value in row.items() if key not in (CONTENT_KEY, UPDATED_KEY)}
    # A file's row of another shape than the app writes (a tool's) is left out, with a word
    # in the log, as a data root's record is: listed as it was, it broke the document's
    # schema (a negative size) and named a file no request could reach (red team 60).
    files = row.get("files")
    if files is not None:
        kept = []
        for file in files:
            fault = row_fault(file, hashed=hashed)
            if fault is None:
                kept.append({key: value for key, value in file.items() if key not in _NOT_ANSWERED})
            else:
                say_left_out(row["id"], file.get("name"), fault)
        row = {**row, "files": kept}
    # The key order session.json always had.
    return cast(SessionRecord, dict(sorted(row.items())))


def session_row(conn: Any, session_id: str) -> dict[str, Any] | None:
    """The live session's row with its files, read on ``conn`` as `RemoteSessions.get`
    reads it; ``None`` where there is none. A restore reads it so in its own transaction,
    after its change: read on another connection once the restore had committed, a read
    that failed there (its connection lost, a statement timeout) answered a restore that was
    made, and audited, as one that failed, "a read changes nothing, so nothing was changed.
    Retry it" (red team 68), where a data root's restore answers with what it read before
    its move (`app.store.files.Files.restore`)."""
    return cast(
        "dict[str, Any] | None",
        conn.execute(
            _SESSION_SELECT + " WHERE s.id = %s AND s.deleted_at IS NULL", (session_id,)
        ).fetchone(),
    )


def session_record(row: dict[str, Any], *, hashed: bool) -> SessionRecord:
    """The session a row `session_row` read holds, checked as every read checks it
    (`UnreadableSessionError` where it is not what its writes acknowledged)."""
    return _session(row, hashed=hashed)


class RemoteSessions:
    """The sessions of one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, title: str, metadata: dict[str, Any] | None) -> SessionRecord:
        """Create a session (one committed row) and return it."""
        metadata = checked_session_fields(title, metadata)
        # A page is `id > cursor`, so a page must never show a session while one with a
        # lower id is still to commit: that one would appear behind a walker's cursor and
        # never be listed to it. A create holds CREATE_LOCK shared from taking its id, after
        # every id in the table (another replica's clock may be behind), to its commit; a page
        # holds it exclusively until its snapshot is taken (`page`), so it waits for the
        # creates under way and no create takes an id meanwhile. The write takes it with its
        # BEGIN, before the statement below, whose snapshot is therefore taken after it.
        what = f"the creation of a session titled {title!r}"
        with self.db.write(what, lock=CREATE_LOCK) as conn:
            newest = conn.execute("SELECT max(id) AS id FROM app_sessions").fetchone()
            if newest is not None and newest["id"] is not None:
                make_later_than(newest["id"])
            session_id = new_session_id()
            moment = now()
            when = moment.isoformat(timespec="microseconds")
            # What the create acknowledges, as `app.remote.db.utc` reads the time back.
            acknowledged = {
                "id": session_id,
                "title": title,
                "metadata": metadata,
                "created_at": when,
                "updated_at": when,
            }
            digest = content_sha256(acknowledged)
            inserted = conn.execute(
                "INSERT INTO app_sessions"
                " (id, title, metadata, created_at, updated_at, content_sha256, updated_sha256)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    session_id,
                    title,
                    Json(metadata),
                    moment,
                    moment,
                    digest,
                    updated_sha256(session_id, when),
                ),
            )
            pg.stored(inserted, self.db.where, what, "app_sessions")
            # The row as stored once every trigger has run (red team 63: the metadata column
            # retyped jsonb under a live replica stored each session's metadata otherwise
            # than this create answers, its keys reordered; a trigger before the insert
            # changed the title unseen, red team 62's *not stopped* for a session's row).
            conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
            kept = conn.execute(
                "SELECT title, metadata::text AS metadata, content_sha256 FROM app_sessions"
                " WHERE id = %s",
                (session_id,),
            ).fetchall()
            stored = [(k["title"], k["metadata"], k["content_sha256"]) for k in kept]
            if stored != [(title, json.dumps(metadata), digest)]:
                raise WriteNotStoredError(self.db.where, what, "app_sessions", after=True)
        return _session({**acknowledged, "files": []}, hashed=False)  # keyed by this create

    def get(self, session_id: str) -> SessionRecord:
        """The live session with its files."""
        check_session_id(session_id)
        hashed = self.db.hashed
        with self.db.conn() as conn:
            row = session_row(conn, session_id)
        if row is None:
            raise SessionNotFoundError(session_id)
        return _session(row, hashed=hashed)

    def require(self, session_id: str) -> None:
        """Check that the live session exists (its row only)."""
        check_session_id(session_id)
        with self.db.conn() as conn:
            row = conn.execute(
                "SELECT 1 FROM app_sessions WHERE id = %s AND deleted_at IS NULL", (session_id,)
            ).fetchone()
        if row is None:
            raise SessionNotFoundError(session_id)

    def ids(self) -> list[str]:
        """Every live session id, oldest first."""
        with self.db.conn() as conn:
            rows = conn.execute(
                "SELECT id FROM app_sessions WHERE deleted_at IS NULL ORDER BY id"
            ).fetchall()
        return [row["id"] for row in rows]

    def page(self, limit: int, after: str | None, max_bytes: int | None) -> Page:
        """One page of live sessions, oldest first (stable while others create or delete)."""
        if limit < 1:
            raise BadRequestError(f"limit must be at least 1, not {limit}")
        cursor = "" if after is None else check_session_id(after)
        hashed = self.db.hashed  # read once, before the page's own connection
        with self.db.conn() as conn:
            # Taken before the transaction and given up by its first statement, at whose start
            # the snapshot is taken: the creates under way have committed by then (see
            # `create`), and pages wait for each other only that long.
            conn.execute("SELECT pg_advisory_lock(%s, %s)", CREATE_LOCK)
            held = True
            try:
                with conn.transaction():
                    # One snapshot for the page and its total.
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", CREATE_LOCK)
                    held = False
                    rows = conn.execute(
                        _SESSION_SELECT
                        + " WHERE s.id > %s AND s.deleted_at IS NULL ORDER BY s.id LIMIT %s",
                        (cursor, limit + 1),
                    ).fetchall()
                    count = conn.execute("SELECT sum(live) AS n FROM app_session_counts").fetchone()
            finally:
                if held:
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", CREATE_LOCK)
        total = int(count["n"]) if count else 0
        more = len(rows) > limit
        items: list[SessionRecord] = []
        passed: list[LeftOut] = []
        size = 0
        for row in rows[:limit]:
            try:
                session = _session(row, hashed=hashed)
            except UnreadableSessionError as error:
                # One row a tool wrote must not fail every page that holds it (red team 60).
                passed.append(_left_out(error))
                continue
            if max_bytes is not None:
                # ASCII-escaped JSON bounds the UTF-8 answer from above, as in the local store.
                size += len(json.dumps(session))
                if items and size > max_bytes:
                    cursor = max([items[-1]["id"], *(left.id for left in passed)])
                    return Page(items=items, total=total, next=cursor, left_out=tuple(passed))
            items.append(session)
        last = rows[:limit][-1]["id"] if rows else None
        return Page(items=items, total=total, next=last if more else None, left_out=tuple(passed))

    def iter_all(self) -> Iterator[SessionRecord]:
        """Every live session, oldest first, read page by page."""
        after: str | None = None
        while True:
            page = self.page(_ITER_BATCH, after, None)
            yield from page.items
            if page.next is None:
                return
            after = page.next

    def left_out(self, listed: set[str]) -> list[tuple[str, str]]:
        """Each live session whose row is not of the app's shape (`rows.session_fault`), or
        whose title, metadata, id or creation time changed since its create
        (`rows.content_fault`), but for those in ``listed``, with why and what puts it back:
        `app sessions list` left them out without a word (red team 60; session 66)."""
        hashed = self.db.hashed
        with self.db.conn() as conn:
            rows = conn.execute(
                f"SELECT id, title, metadata, {utc('created_at')} AS created_at,"  # noqa: S608
                f" {utc('updated_at')} AS updated_at, content_sha256, updated_sha256"
                " FROM app_sessions WHERE deleted_at IS NULL"
                " AND (json_typeof(metadata) <> 'object' OR content_sha256 IS NOT NULL OR %s)"
                " AND NOT (id = ANY(%s)) ORDER BY id",
                (hashed, sorted(listed)),
            ).fetchall()
        shape = (
            f"(a tool or an edit wrote it); `app data check` reports it ({FINDING}): give it "
            "its metadata back from a backup, or '{}', with every replica stopped, or delete "
            "the session"
        )
        changed = (
            f"(a tool or an edit changed it); `app data check` reports it ({CONTENT_FINDING}): "
            "put its title and metadata back from a backup with every replica stopped, or "
            "delete the session"
        )
        found = []
        for row in rows:
            fault = session_fault(row["metadata"])
            if fault is not None:
                found.append((row["id"], f"its {SESSION_ROW} {fault} {shape}"))
            elif (
                fault := content_fault(row, hashed=hashed) or updated_fault(row, hashed=hashed)
            ) is not None:
                found.append((row["id"], f"its {SESSION_ROW} {fault} {changed}"))
        return found

    def move_to_trash(self, session_id: str, reason: str) -> TrashEntry:
        """Move a session, files and all, to the trash state; audited."""
        check_session_id(session_id)
        moment = now()
        name = trash_name(moment, session_id, file=False)
        what = f"the delete of session {session_id}"
        counted: list[int] = []

        def in_the_trash(conn: Any) -> None:
            # At the commit point, every trigger run: the session in the trash with every
            # file it had. One after the update that took them away (an archiving tool's)
            # had the delete answered with an entry that held nothing (red team 69 on
            # integrity).
            trashed = [session_id]
            pg.trashed(conn, self.db.where, what, "app_sessions", trashed, moment, files=counted[0])

        with self.db.write(what, settled=in_the_trash) as conn:
            # Its files are counted with the update, to be found again once every trigger
            # has run; its row locked first, so that the count's snapshot is taken with no
            # change of the app's to its files in flight (each locks that row first,
            # `Database.change`): the update's own snapshot, taken before it waited for
            # an upload's commit, counted without that upload's row. Its live files only,
            # those its entry holds: the versions already in the trash are entries of their
            # own, which another replica's empty-trash deletes without that lock; counted,
            # the delete was refused as one a trigger undid (red team 69 on regress, b).
            live = conn.execute(
                "SELECT 1 FROM app_sessions WHERE id = %s AND deleted_at IS NULL FOR NO KEY UPDATE",
                (session_id,),
            ).fetchone()
            if live is None:
                # Not live as it is locked: not found, and the look for a row the update
                # skipped is not made. Made after an update that found none, it found the
                # session live all the same where another replica's restore of it had
                # committed in between, and refused the delete as a trigger's doing, 503
                # `write_not_stored` (red team 69 on regress, b). Locked, the row stays live
                # to the update, which only a trigger or a rule can make skip it.
                raise SessionNotFoundError(session_id)
            row = conn.execute(
                "WITH f AS (SELECT count(*) AS n FROM app_files WHERE session_id = %s"
                " AND deleted_at IS NULL)"
                " UPDATE app_sessions SET deleted_at = %s, deleted_reason = %s, trash_name = %s"
                " WHERE id = %s AND deleted_at IS NULL RETURNING title, (SELECT n FROM f) AS files",
                (session_id, moment, reason, name, session_id),
            ).fetchone()
            if row is None:
                pg.skipped(conn, self.db.where, what, "app_sessions", "id = %s", (session_id,))
                raise SessionNotFoundError(session_id)
            counted.append(row["files"])
            self.db.audit(
                conn, "trash-session", session_id, trash=name, reason=reason, title=row["title"]
            )
        return trash_entry(name, "session", session_id, None, moment, reason, row["title"])

    def purge(self) -> list[TrashEntry]:
        """Move every live session to the trash state, in one transaction; one audit row."""
        moment = now()
        prefix = moment.strftime(TRASH_TIME_FORMAT) + "-"
        what = "the purge of every live session"
        trashed: list[str] = []
        counted: list[int] = []

        def in_the_trash(conn: Any) -> None:
            # As a session's delete (red team 69 on integrity).
            pg.trashed(conn, self.db.where, what, "app_sessions", trashed, moment, files=counted[0])

        with self.db.write(what, settled=in_the_trash) as conn:
            rows = conn.execute(
                # The live sessions' files counted as the update finds them (one snapshot):
                # under maintenance's exclusive hold, no replica writes meanwhile.
                "WITH f AS (SELECT count(*) AS n FROM app_files f JOIN app_sessions s"
                " ON s.id = f.session_id WHERE s.deleted_at IS NULL AND f.deleted_at IS NULL)"
                " UPDATE app_sessions SET deleted_at = %s, deleted_reason = 'purge',"
                " trash_name = %s || id WHERE deleted_at IS NULL"
                " RETURNING id, title, trash_name, (SELECT n FROM f) AS files",
                (moment, prefix),
            ).fetchall()
            rows.sort(key=lambda row: row["id"])
            trashed.extend(r["id"] for r in rows)
            counted.append(rows[0]["files"] if rows else 0)
            self.db.audit(conn, "purge", self.db.where, count=len(rows), sessions=trashed)
        return [
            trash_entry(r["trash_name"], "session", r["id"], None, moment, "purge", r["title"])
            for r in rows
        ]


def _left_out(error: UnreadableSessionError) -> LeftOut:
    """What a page says of a session whose row is not of the app's shape; the log names it."""
    log.warning("session %s is left out of GET /sessions: %s", error.session_id, error)
    return LeftOut(
        error.session_id,
        LEFT_OUT_UNREADABLE,
        f"session {error.session_id} is counted but not shown: its {SESSION_ROW} "
        f"{error.damage}; the server's log and `app data check` ({FINDING}) name it and what "
        "to do",
    )
