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

Split by job, as the local backend is: :mod:`app.remote.db` (the pool, and the one way a
change is written), :mod:`app.remote.sessions`, :mod:`app.remote.files`,
:mod:`app.remote.trash` and :mod:`app.remote.check`; :class:`RemoteStore` composes them and
owns the holder.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from app.digests import Digests
from app.errors import (
    WATCH_FAILED,
    AppError,
    RestoredUnreadableSessionError,
    UnreadableSessionError,
    watch_failed,
)
from app.remote import pg
from app.remote.check import check
from app.remote.db import Database
from app.remote.errors import (
    HolderLostError,
    HolderUnwatchedError,
    ObjectStoreCutShortError,
    ObjectStoreUnavailableError,
    TrashEmptiedCutShortError,
)
from app.remote.files import RemoteFiles
from app.remote.objects import ObjectStore
from app.remote.sessions import RemoteSessions, session_record
from app.remote.transfer import RemoteUpload
from app.remote.trash import RemoteTrash
from app.storage import (
    CheckReport,
    FileEntry,
    IfMatch,
    Page,
    SessionRecord,
    Storage,
    TrashEntry,
)

__all__ = ["PROBE_SECONDS", "RemoteStore"]

log = logging.getLogger("app.remote.store")

#: How often, at most, readiness asks the object store whether it answers.
PROBE_SECONDS = 5.0

#: How long ``GET /health`` and ``/ready`` say that the database refused a change as
#: read-only, after the last such refusal.
READ_ONLY_SAID_SECONDS = 10.0


class _Watch:
    def __init__(
        self,
        holder: pg.Holder | None,
        interval: float,
        on_lost: Callable[[str], object],
        objects: ObjectStore | None = None,
    ) -> None:
        self._stop = threading.Event()
        self._holder = holder
        self._objects = objects
        self._interval = interval
        self._on_lost = on_lost
        self._thread = threading.Thread(target=self._run, name="app-store-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Any exception: a watch that ended silently left its replica serving with its hold
        # and its prefix never looked at again (as the local lock's watcher; leftovers74).
        try:
            self._watch()
        except Exception as error:
            log.exception("the watch of this replica's hold failed")
            if not self._stop.is_set():
                self._on_lost(watch_failed(error))

    def _watch(self) -> None:
        missed = 0  # checks in a row that found the prefix's stamp gone
        while not self._stop.wait(self._interval):
            if self._holder is not None and self._holder.error is not None:
                self._on_lost(self._holder.error.reason)
                return
            # The prefix handed to a copy of the database: as a local server whose lock file
            # was replaced, writes are refused and the server stops (red team 39). Its stamp
            # gone (red team 41) only when seen twice in a row: one odd answer stops nothing.
            taken = None if self._objects is None else self._objects.handed_away()
            gone = self._objects is not None and self._objects.stamp_gone
            missed = missed + 1 if gone else 0
            if taken is not None and self._holder is not None and (not gone or missed >= 2):
                self._holder.lose(*taken)
                self._on_lost(taken[0])
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class _ObjectsProbe:
    """Whether the object store answers, for readiness: a HEAD of the bucket, at most once
    every :data:`PROBE_SECONDS` and only while readiness is asked, in a thread of its own, so
    that no readiness answer waits for it and a load balancer polling every replica costs
    the store one small request per replica every few seconds, whatever the traffic."""

    def __init__(self, objects: ObjectStore, silent_seconds: float) -> None:
        self._objects = objects
        self._silent_seconds = silent_seconds
        self._lock = threading.Lock()
        self._asked: float | None = None  # the probe in flight, since when
        self._started = -PROBE_SECONDS
        self._failed: str | None = None

    def problem(self) -> str | None:
        now = time.monotonic()
        with self._lock:
            if self._asked is None and now - self._started >= PROBE_SECONDS:
                probe = threading.Thread(target=self._probe, name="app-objects-probe", daemon=True)
                try:
                    probe.start()
                except RuntimeError:
                    # At the limit of threads: no probe in flight, so none is said to be
                    # silent (red team 34); the next look tries again.
                    pass
                else:
                    self._asked = self._started = now
            asked, failed = self._asked, self._failed
        if asked is not None and now - asked > self._silent_seconds:
            return (
                f"the object store has not answered for {now - asked:.0f} s (more than "
                f"s3_read_timeout_seconds, {self._silent_seconds:g} s): uploads and downloads "
                "are refused 503 object_store_unavailable. Check that it runs and is not "
                "stopped or cut off from this server (`app doctor` checks it)"
            )
        return failed

    def _probe(self) -> None:
        try:
            self._objects.reachable()
        except ObjectStoreUnavailableError:
            # Its reason names the endpoint; this answer goes to whoever asks, unauthenticated.
            failed: str | None = (
                "the object store did not answer this server's last probe, or refused it: "
                "uploads and downloads are refused 503 object_store_unavailable. `app doctor` "
                "on this server says why"
            )
        else:
            failed = None
        with self._lock:
            self._asked, self._failed = None, failed


class RemoteStore(Storage):
    """Sessions and their files in one database and one object prefix, shared by replicas.

    Args:
        database_url: the database (already opened, hence stamped, by
            :func:`app.remote.pg.open_database`).
        objects: the object prefix (already opened by :meth:`ObjectStore.open`).
        profile: the profile, for audit rows.
        holder: this replica's live hold on the database; every write checks it first.
            ``None`` for maintenance commands, which hold the database exclusively instead.
            The store closes it in :meth:`close`.
        maintenance: a maintenance command's exclusive hold (:func:`app.remote.pg.maintenance`),
            which every write checks, before it and at its commit point, as a replica's
            checks its holder; ended by ``on_close``, not by the store.
        kind: who writes, for audit rows (``"server"``, ``"maintenance"``, ``"tests"``).
        read_only: a reader's store (it holds nothing, so it must change nothing): every
            write is refused.
        max_upload_bytes: the largest file accepted.
        max_files_per_session: the most live files one session may hold.
        orphan_grace: how old an object without a row must be before :meth:`check` calls it
            an orphan (younger ones may belong to an upload about to commit).
        pool_size: the most connections this process opens.
        lock_wait_seconds: the longest a statement waits for a lock another connection
            holds (the ``database_lock_wait_seconds`` setting).
        pool_wait_seconds: the longest a request waits for a free pooled connection.
        wait_seconds: the longest one wait for an answer of the database lasts (the
            ``database_wait_seconds`` setting).
        on_close: called last by :meth:`close` (a maintenance command's exclusive hold,
            :func:`app.remote.pg.maintenance`, ends there).

    Raises:
        SandboxViolationError: under pytest, a database that is not one of the run's scratch
            ones (its pool checks, as ``objects`` checked its prefix when it was made).
    """

    def __init__(
        self,
        database_url: str,
        objects: ObjectStore,
        profile: str,
        *,
        holder: pg.Holder | None = None,
        kind: str = "server",
        read_only: bool = False,
        max_upload_bytes: int = 100 * 1024 * 1024,
        max_files_per_session: int = 10_000,
        orphan_grace: timedelta = timedelta(hours=1),
        pool_size: int = 8,
        on_close: Callable[[], object] | None = None,
        maintenance: pg.Maintenance | None = None,
        lock_wait_seconds: float = 10.0,
        pool_wait_seconds: float = 30.0,
        wait_seconds: float = 30.0,
    ) -> None:
        self.database_url = database_url
        self.db = Database(
            database_url,
            profile,
            holder=holder,
            kind=kind,
            pool_size=pool_size,
            read_only=read_only,
            maintenance=maintenance,
            lock_wait_seconds=lock_wait_seconds,
            pool_wait_seconds=pool_wait_seconds,
            wait_seconds=wait_seconds,
        )
        self.objects = objects
        self.orphan_grace = orphan_grace
        self._on_close = on_close
        self.sessions = RemoteSessions(self.db)
        self.files = RemoteFiles(
            self.db,
            objects,
            max_upload_bytes=max_upload_bytes,
            max_files=max_files_per_session,
        )
        self.trash = RemoteTrash(self.db, objects)
        self._probe = _ObjectsProbe(objects, objects.read_timeout)

    @property
    def where(self) -> str:
        """The database's URL, without its password."""
        return self.db.where

    @property
    def profile(self) -> str:
        """The profile, for audit rows."""
        return self.db.profile

    @property
    def holder(self) -> pg.Holder | None:
        """This replica's hold on the database (``None`` for maintenance)."""
        return self.db.holder

    @property
    def kind(self) -> str:
        """Who writes, for audit rows."""
        return self.db.kind

    # -- the holder -------------------------------------------------------------------

    @property
    def location(self) -> str:
        """Where the data lives, for messages."""
        return f"database {self.where} with objects in {self.objects.where}"

    @property
    def trash_location(self) -> str:
        """Where deleted sessions and files are kept, for messages."""
        return self.trash.location

    def ensure_held(self) -> None:
        """Raise :class:`HolderLostError` if this replica's hold on the database is gone."""
        self.db.ensure_held()

    def audit(self, operation: str, target: str | Path, **details: Any) -> None:
        """Append one row to ``app_audit`` (its own transaction)."""
        self.db.audit_alone(operation, str(target), **details)

    def publish(self, **fields: Any) -> None:
        """Add to what this replica's holder row says about it (``url``, or ``port``), or
        that it is stopping (``stopping_since``, in its session: `pg.Holder.stopping`)."""
        if self.holder is None or not self.holder.row:
            return
        if "stopping_since" in fields:
            self.holder.stopping(str(fields["stopping_since"]))
        url = fields.get("url") or (f"port {fields['port']}" if "port" in fields else None)
        if url is None:
            return
        what = "the write of this replica's address into its holder row"
        with self.db.conn(what, "it may or may not have been written") as conn:
            conn.execute(
                "UPDATE app_holders SET url = %s WHERE id = %s", (str(url), self.holder.row["id"])
            )
        self.holder.url = str(url)

    def watch(self, interval: float, on_lost: Callable[[str], object]) -> _Watch:
        """Call ``on_lost(reason)`` once, within ``interval`` seconds of the holder's loss."""
        return _Watch(self.holder, interval, on_lost, self.objects)

    def lost_error(self, reason: str) -> HolderLostError:
        """The error a replica that lost its connection stops with (exit 70)."""
        holder = self.holder
        if holder is not None and holder.error is not None and holder.error.reason == reason:
            return holder.error  # its own words (a prefix handed away is no lost connection)
        if reason.startswith(WATCH_FAILED):
            return HolderUnwatchedError(self.where, reason)
        return HolderLostError(self.where, reason)

    def readiness(self) -> dict[str, str | None]:
        """The database from this replica's heartbeat (its holder pings every second on a
        connection of its own: no query here), the object store from a probe at most every
        :data:`PROBE_SECONDS`. A backend is not ready once it has been silent for longer than
        a request would wait for it (``database_wait_seconds``, ``s3_read_timeout_seconds``):
        requests that need it are then refused."""
        database = self._database_problem() or self.writes_stopped
        return {"database": database, "object store": self._probe.problem()}

    @property
    def writes_stopped(self) -> str | None:
        """Why changes are refused now, for ``GET /health`` and ``/ready``: the database
        refused one as read-only within :data:`READ_ONLY_SAID_SECONDS`, and none committed
        since (red team 38: both answered ``ok`` while every change was refused). Said for a
        while, not until the next change commits: a load balancer that takes the replica out
        sends it none. Without the database's name: anyone may ask."""
        refusal = self.db.read_only_refusal
        if refusal is None or time.monotonic() - refusal[0] > READ_ONLY_SAID_SECONDS:
            return None
        return (
            "the database refused a change as read-only (default_transaction_read_only is on "
            "for it or for the app's role, or it is a standby): every change is refused until "
            "it is writable again; reads are served. `app doctor` on this server says more"
        )

    def _database_problem(self) -> str | None:
        holder = self.holder
        if holder is None:
            return None  # not a replica: nothing beats
        if holder.error is not None:
            return (
                "this server lost the connection that holds the database, refuses every "
                "write and is stopping; restart it once the database answers"
            )
        silent = holder.silent_for()
        if silent <= self.db.wait_seconds:
            return None
        return (
            f"the database has not answered this server's heartbeat for {silent:.0f} s (more "
            f"than database_wait_seconds, {self.db.wait_seconds:g} s): requests that need it "
            "are refused 503 database_timeout. Check that PostgreSQL runs and is not stopped "
            "or cut off from this server (`app doctor` checks it)"
        )

    def close(self) -> None:
        """Close the pool, then the holder (which releases this replica's hold)."""
        try:
            self.db.close()
        finally:
            if self.holder is not None:
                self.holder.close()
            if self._on_close is not None:
                self._on_close()

    # -- sessions ---------------------------------------------------------------------

    def create_session(
        self, title: str = "", metadata: dict[str, Any] | None = None
    ) -> SessionRecord:
        """Create a session (one committed row) and return it."""
        return self.sessions.create(title, metadata)

    def get_session(self, session_id: str) -> SessionRecord:
        """The session with its files.

        Raises:
            InvalidNameError: the id is malformed.
            SessionNotFoundError: there is no such live session.
        """
        return self.sessions.get(session_id)

    def require_session(self, session_id: str) -> None:
        """Check that the live session exists (its row only)."""
        self.sessions.require(session_id)

    def session_ids(self) -> list[str]:
        """Every live session id, oldest first."""
        return self.sessions.ids()

    def list_sessions(
        self, *, limit: int = 50, after: str | None = None, max_bytes: int | None = None
    ) -> Page:
        """One page of live sessions, oldest first.

        The cursor is the last id seen and ids are time-ordered, so a page is
        ``WHERE id > cursor ORDER BY id LIMIT n`` on any replica: stable while others create
        (new ids sort last) or delete.
        """
        return self.sessions.page(limit, after, max_bytes)

    def iter_all(self) -> Iterator[SessionRecord]:
        """Every live session, oldest first, read page by page."""
        return self.sessions.iter_all()

    def left_out(self, listed: set[str]) -> list[tuple[str, str]]:
        """The live sessions a listing leaves out (a row of another shape), with why."""
        return self.sessions.left_out(listed)

    def delete_session(self, session_id: str, *, reason: str = "delete") -> TrashEntry:
        """Move a session, files and all, to the trash state; audited."""
        return self.sessions.move_to_trash(session_id, reason)

    def purge(self) -> list[TrashEntry]:
        """Move every live session to the trash state, in one transaction; one audit row."""
        return self.sessions.purge()

    # -- files ------------------------------------------------------------------------

    def list_files(self, session_id: str) -> list[FileEntry]:
        """The live files of a live session: ``name``, ``size``, ``sha256``, ``uploaded_at``."""
        return self.sessions.get(session_id)["files"]

    def open_file(self, session_id: str, name: str) -> tuple[BinaryIO, FileEntry]:
        """Open a file's object for reading, with its entry; the caller closes it.

        Raises:
            SessionNotFoundError, FileNotFoundInSessionError: no such session or file.
            ObjectMissingError: the row names an object that is gone (``app data check``).
        """
        return self.files.open(session_id, name)

    def begin_upload(
        self,
        session_id: str,
        name: str,
        *,
        replace: bool = False,
        if_match: IfMatch | None = None,
        digests: Digests | None = None,
    ) -> RemoteUpload:
        """Start streaming a file into a session (refused at once if it cannot commit);
        ``if_match`` is checked again in the transaction that records it, ``digests`` before
        it, against the SHA-256 of the object written."""
        return self.files.begin_upload(
            session_id, name, replace=replace, if_match=if_match, digests=digests
        )

    def put_file(
        self, session_id: str, name: str, data: bytes | Iterable[bytes], *, replace: bool = False
    ) -> FileEntry:
        """Store a whole file at once (bytes, or an iterable of chunks)."""
        return self.files.put(session_id, name, data, replace=replace)

    def delete_file(
        self, session_id: str, name: str, *, if_match: IfMatch | None = None
    ) -> TrashEntry:
        """Move one file to the trash state (its object stays; only a version ``if_match``
        names); audited."""
        return self.files.delete(session_id, name, if_match=if_match)

    # -- trash ------------------------------------------------------------------------

    def list_trash(self) -> list[TrashEntry]:
        """Every trashed session and file, oldest first."""
        return self.trash.entries()

    def deleted_entry(self, session_id: str, file: str | None = None) -> str | None:
        """The trash entry of the deleted session (or the newest of its ``file``); None where
        it is not deleted, or the database cannot say now."""
        return self.trash.deleted_entry(session_id, file)

    def restore(
        self, session_id: str, *, file: str | None = None, entry: str | None = None
    ) -> SessionRecord:
        """Bring a session (or the most recently trashed version of a file, or the one in
        trash entry ``entry``) back; audited.

        Raises:
            SessionNotFoundError: nothing to restore (or, for a file, its session is not live:
                restore the session first).
            BadRequestError: a live file has that name again.
        """
        # Answered with the row the restore's transaction read: read here after its commit,
        # a read that failed said "nothing was changed" of a restore made (red team 68).
        taken, row = self.trash.restore(session_id, file, entry)
        try:
            return session_record(row, hashed=self.db.hashed)
        except UnreadableSessionError as unreadable:
            # A row whose title or metadata changed in the trash (its content_sha256 no
            # longer theirs) comes back, and is said to be unreadable, as the local store
            # says of a damaged session.json: "cannot read session" alone read as a restore
            # that failed (red team 61). A row of another shape is refused before (`trash`).
            if taken is None or type(unreadable) is not UnreadableSessionError:
                raise
            raise RestoredUnreadableSessionError(
                session_id,
                unreadable.damage,
                file=unreadable.file,
                finding=unreadable.finding,
                entry=taken,
            ) from None

    def empty_trash(
        self, older_than: timedelta | None = None, *, via: str = "command"
    ) -> list[TrashEntry]:
        """Delete trashed rows for good, then their objects: the only way bytes go; audited.

        The rows go first, in one transaction: a crash after it leaves objects that no row
        names, which :meth:`check` removes; the other order could leave rows naming nothing.
        Under maintenance's exclusive hold (``app data empty-trash``), every object no row
        names is then deleted too, as ``check --repair`` does (audited as its repair): the
        objects of an empty-trash killed between its transaction and their deletion were
        left, and a read-only check after the next one reported them as uploads never
        committed (red team 34). It lists the bucket's objects once.
        """
        removed, named, refused = self.trash.empty(older_than, via=via)
        if self.db.kind == "maintenance":
            try:
                check(
                    self.db,
                    self.objects,
                    orphan_grace=self.orphan_grace,
                    repair=True,
                    thorough=False,
                )
            except AppError as error:
                # The entries are gone, audited: the refusal says so, and what finishes the
                # rest. It was the repair's ("every row of the database as it was") or the
                # store's alone, of a command that had removed them (red team 52).
                raise _emptied_cut_short(
                    removed, named, refused, error, self.objects.where, self.db.where
                ) from None
        return removed

    # -- consistency --------------------------------------------------------------------

    def check(
        self, *, repair: bool = False, thorough: bool = True, hash_bytes: bool = True
    ) -> CheckReport:
        """Reconcile rows and objects (:func:`app.remote.check.check`)."""
        return check(
            self.db,
            self.objects,
            orphan_grace=self.orphan_grace,
            repair=repair,
            thorough=thorough,
            hash_bytes=hash_bytes,
        )


def _emptied_cut_short(
    removed: list[TrashEntry],
    named: int,
    refused: AppError | None,
    error: AppError,
    objects: str,
    database: str,
) -> TrashEmptiedCutShortError:
    """The refusal of an ``app data empty-trash`` cut short after its rows were deleted, by
    the object store or the database: what it removed, and what it left. ``named``: how
    many objects the removed rows named; ``refused``: the store's refusal of their deletion,
    if it refused."""
    count = len(removed)
    entries = f"{count} trash entr{'y' if count == 1 else 'ies'}"
    theirs = f"{named} object{'' if named == 1 else 's'}"
    if isinstance(error, ObjectStoreCutShortError):
        # The repair lists what no row names after the entries' own deletion: its count.
        done = error.done.removeprefix("By then it had ")
        done = "" if done == error.done else f", and it had {done} since"
        return TrashEmptiedCutShortError(
            f"object store {objects} refused {error.refused} ({error.reason})",
            entries,
            done,
            error.left.partition(" as found")[0] + ", which no row names,",
            "object store",
        )
    if refused is None:
        done = f" and deleted the {theirs} they named" if named else ""
        left = "any other object no row names (it could not list them)"
    else:
        done = ""
        left = f"the {theirs} they named, which no row names now, and any other such object,"
    reason = str(getattr(error, "reason", "") or error.message)
    if isinstance(error, ObjectStoreUnavailableError):
        refusal = f"object store {objects} refused the listing of the objects no row names"
        return TrashEmptiedCutShortError(
            f"{refusal} ({reason})", entries, done, left, "object store"
        )
    refusal = f"database {database} failed its search for the objects no row names ({reason})"
    return TrashEmptiedCutShortError(refusal, entries, done, left, "database")
