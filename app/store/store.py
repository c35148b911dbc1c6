"""`Store`: the local backend of the seam, a data root's sessions, files and trash in one.

Guarantees, and who provides them:

* **One commit point per change** (:mod:`app.store.files`): a file switches by one rename of
  its record; the old bytes go to the trash after it, and ``check`` finishes or undoes what
  a crash interrupted.
* **Atomic.** Every byte is written to a temporary file in ``.tmp/`` (same filesystem),
  fsynced, and renamed into place, and the directory is fsynced
  (:meth:`app.dataroot.DataRoot.commit_temp_file`). A new session directory appears
  complete, ``session.json`` included, by one rename. What a crash leaves behind is found
  and reconciled by :meth:`Store.check` (``app data check``, and every server start-up).
* **Confined.** Session ids must be 32 lower-case hex digits and file names are checked by
  :func:`app.names.check_file_name`; every path is also checked to lie inside its session.
* **Reversible.** Deleting moves to ``.trash/``; replacing a file keeps the old bytes in
  ``.trash/`` too; :meth:`Store.restore` brings a session or a file back; only
  :meth:`Store.empty_trash` removes bytes. Every one of these appends a line to
  ``audit.jsonl``.
* **Held.** Every write first checks that the data root's lock file is still the one this
  process locked (:meth:`app.dataroot.DataRoot.ensure_held`, one ``lstat``), and again just
  before its commit point, so a process that lost its lock stops writing at once.

A :class:`Store` assumes its data root is held by this process (the lock guarantees no
other process writes there). Within the process, it is safe to use from many threads:
changes to one session are serialised by a per-session lock shared by every Store on the
root (:mod:`app.store.concurrency`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Concatenate, Final, ParamSpec, TypeVar

from app.dataroot import LOCAL_FILESYSTEMS, Prepared, filesystem_type, lexists, link_remedy
from app.errors import (
    AFTER_FAILED_SYNC,
    COMMAND_LOG,
    PARTWAY_RESOLVE,
    SERVER_LOG,
    AppError,
    FsyncFailed,
    NotInTrashError,
    RepairStoppedPartwayError,
    RestoredUnreadableSessionError,
    RestoreOverwriteError,
    SessionNotFoundError,
    StoppedPartwayError,
    UnreadableSessionError,
    partway_cause,
    unaudited,
)
from app.names import check_stored_name
from app.storage import (
    MAX_METADATA_BYTES,
    MAX_TITLE_CHARS,
    CheckReport,
    FileEntry,
    Page,
    SessionRecord,
    Storage,
    TrashEntry,
)
from app.store.files import Files
from app.store.ids import check_session_id, make_later_than
from app.store.records import LEGACY_FILES_KEY, read_meta
from app.store.sessions import Sessions
from app.store.trash import Trash

if TYPE_CHECKING:
    from app.check import Checker
    from app.dataroot import DataRoot
    from app.digests import Digests
    from app.storage import HolderWatch, IfMatch
    from app.store.upload import Upload

__all__ = ["MAX_METADATA_BYTES", "MAX_TITLE_CHARS", "Store"]

log = logging.getLogger("app.store")


_P = ParamSpec("_P")
_R = TypeVar("_R")

#: Filesystems held in memory: whatever a server acknowledges there is gone at a reboot.
IN_MEMORY_FILESYSTEMS: Final = frozenset({"tmpfs", "ramfs"})

#: How many of a session's newest trash entries of files a file's 404 looks at for the one
#: that holds it (`Store.deleted_entry`).
FILE_ENTRIES_LOOKED_AT: Final = 32


def _changes(
    method: Callable[Concatenate[Store, _P], _R],
) -> Callable[Concatenate[Store, _P], _R]:
    """A change to the root, marked as in flight while it runs (`DataRoot.changing`)."""

    @functools.wraps(method)
    def changing(self: Store, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self.root.changing():
            return method(self, *args, **kwargs)

    return changing


class Store(Storage):
    """Sessions, their files and the trash of one open data root (a :class:`~app.storage.Storage`).

    Args:
        root: an open data root (:func:`app.dataroot.open_root`). Reading works on a
            read-only root; every change needs a writer. Closing the store closes the root.
    """

    reads_from_local_files: Final = True
    """Reading a session or a page costs local file reads, and uploads and downloads work on
    local files (the server lets a few at a time take turns, `app.server.limits.Turn`); a
    remote backend has no such attribute."""

    def __init__(self, root: DataRoot) -> None:
        self.root = root
        kind = filesystem_type(root.path)
        self.reads_may_wait = kind not in LOCAL_FILESYSTEMS
        """Whether a read may wait on something other than a local disk (NFS, a FUSE daemon):
        then the server reads on worker threads, never on its event loop (red team 23;
        overlay is what a container's own filesystem is, made of local directories)."""
        self.in_memory = kind if kind in IN_MEMORY_FILESYSTEMS else None
        """The filesystem's type where the root lives in memory (``tmpfs``), which a reboot
        empties: `app serve` warns of it (red team 42)."""
        self._read_only_refused = False  # see note_read_only
        self.trash = Trash(root)
        self.sessions = Sessions(root, self.trash)
        self.files = Files(
            self.sessions,
            self.trash,
            max_upload_bytes=root.config.max_upload_bytes,
            max_files=root.config.max_files_per_session,
        )
        if root.writable:
            self.sessions.clear_unfinished()
            # New sessions list after every one already made here, in the sessions or in the
            # trash, even if this machine's clock was stepped back since (see make_later_than).
            newest = max([*self.sessions.ids()[-1:], self.trash.newest_session_id() or ""])
            make_later_than(newest)

    # -- the root and its holder ---------------------------------------------------------

    @property
    def sessions_dir(self) -> Path:
        """``<root>/sessions``."""
        return self.root.sessions_dir

    @property
    def location(self) -> str:
        return str(self.root.path)

    @property
    def trash_location(self) -> str:
        return str(self.root.trash_dir)

    def ensure_held(self) -> None:
        self.root.ensure_held()

    @property
    def writes_stopped(self) -> str | None:
        """Why this process refuses every change to the root (an fsync failed, or the root or
        a directory of the app's in it was moved or replaced), or ``None``.

        Said without the root's path: ``GET /health`` shows it to anyone.
        """
        failed = self.root.sync_failed
        if failed is None:
            if (changed := self.root.layout_changed()) is not None:
                return (
                    f"{changed} while the server ran: every change is refused until it is "
                    "put back as it was"
                )
            if self.root.writable and self._read_only_now():
                # Remounted read-only under the server (ext4's errors=remount-ro after a disk
                # error, a read-only bind): every change was refused 503 while /health and
                # /ready said ok (red team 59). Said until it is read-write again.
                return (
                    "the data root's filesystem is read-only (remounted so after a disk error, "
                    "or mounted read-only over it): every change is refused until it is "
                    "remounted read-write; reads are served"
                )
            return None
        return (
            f"an fsync on the data root's filesystem failed at {failed.at} ({failed.strerror}): "
            "every change is refused until the server is restarted, and a restart alone reads "
            f"what the kernel dropped as written: {AFTER_FAILED_SYNC}"
        )

    def note_read_only(self) -> None:
        """A change was refused as read-only (``EROFS``): `writes_stopped` reads the mount
        table too, until it shows the filesystem writable.

        ext4's ``errors=remount-ro`` no longer sets the mount read-only (Linux 6.x: the
        superblock's options say ``emergency_ro``, and ``statvfs`` says read-write): every
        change was refused 503 ``storage_read_only`` while ``GET /health`` said ``ok``
        (red team 64). The table costs about 0.3 ms a read, too much for every
        ``/health``, so only a refusal makes it read.
        """
        self._read_only_refused = True

    def _read_only_now(self) -> bool:
        if _read_only(self.root.path):
            return True
        if not self._read_only_refused:
            return False
        from app import mountinfo

        if mountinfo.emergency_read_only(self.root.path):
            return True
        self._read_only_refused = False  # writable again (or never said so by the table)
        return False

    def readiness(self) -> dict[str, str | None]:
        """The data root: not ready once its writes have stopped (`writes_stopped`). A
        restart, not waiting, brings them back, so ``GET /health`` says so too."""
        return {"data root": self.writes_stopped}

    def audit(self, operation: str, target: str | Path, **details: Any) -> None:
        self.root.audit(operation, target, **details)

    def publish(self, **fields: Any) -> None:
        assert self.root.lock is not None, "only a writer publishes"
        self.root.lock.update(**fields)

    def watch(self, interval: float, on_lost: Callable[[str], object]) -> HolderWatch:
        from app.lock import LockWatcher

        assert self.root.lock is not None, "only a writer is watched"
        # Its stamp too (red team 70): another profile's copied over the root while it ran.
        return LockWatcher(self.root.lock, interval, on_lost, self.root.stamp_changed).start()

    def lost_error(self, reason: str) -> AppError:
        return self.root.lost_error(reason)

    def watch_sessions(self) -> bool:
        """Let reads of kept sessions trust the kernel's change events (`app.store.watch`)
        rather than three stat calls each; the server's, for its lifetime (closed with the
        store). Only a writer keeps answers, and only on a local filesystem: another machine's
        writes to a network one raise no event here. Whether the watch is on."""
        if self.sessions.watch is None and self.root.writable and not self.reads_may_wait:
            from app.store.watch import SessionWatch

            watch = SessionWatch.start(self.sessions.where)
            if watch is not None:
                watch.stale = self.sessions.records_stale
                watch.entry = self.sessions.records_entry
            self.sessions.watch = watch
        return self.sessions.watch is not None

    def close(self) -> None:
        if self.sessions.watch is not None:
            self.sessions.watch.close()
            self.sessions.watch = None
        self.root.close()

    # -- sessions -----------------------------------------------------------------------

    @_changes
    def create_session(
        self, title: str = "", metadata: dict[str, Any] | None = None
    ) -> SessionRecord:
        """Create a session, durably, and return it.

        Args:
            title: a human title, at most :data:`MAX_TITLE_CHARS` characters.
            metadata: any JSON object, at most :data:`MAX_METADATA_BYTES` as JSON.
        """
        return self.sessions.create(title, metadata)

    @_changes
    def create_sessions(
        self, wanted: Sequence[tuple[str, dict[str, Any] | None]]
    ) -> list[SessionRecord | Exception]:
        """Create a session for each ``(title, metadata)`` at once (group commit).

        Each is as durable as :meth:`create_session` makes one, and none is returned before
        all are; the batch shares the filesystem's journal commits and one fsync of
        ``sessions/``. For the server's committer thread (`app.server.committer`).

        Returns:
            For each one, in order, its session, or the error that refused it (the others
            are made all the same).
        """
        return self.sessions.create_many(wanted)

    def get_session(self, session_id: str) -> SessionRecord:
        """The session with id ``session_id``, with its files."""
        return self.sessions.get(session_id)

    def get_session_json(self, session_id: str) -> bytes:
        """:meth:`get_session` as the server's JSON body, kept encoded while it is fresh."""
        return self.sessions.get_json(session_id)

    def require_session(self, session_id: str) -> None:
        """Check that the session exists, reading its session.json only."""
        self.sessions.require(session_id)

    def session_ids(self) -> list[str]:
        """Every session id, oldest first (a directory listing; no session.json is read)."""
        return self.sessions.ids()

    def scan_ids(self) -> list[str]:
        """Every session id, oldest first, from the directory itself (never the index)."""
        return self.sessions.scan_ids()

    def list_sessions(
        self, *, limit: int = 50, after: str | None = None, max_bytes: int | None = None
    ) -> Page:
        """One page of sessions, oldest first, reading only that page's session.json files.

        The cursor is the id of the last session already seen, so pages stay stable while
        sessions are created (they are added at the end) or deleted.

        Args:
            limit: the page size (1 or more).
            after: the ``next`` cursor of the previous page; ``None`` for the first page.
            max_bytes: stop the page early, with a ``next`` cursor, once its sessions take
                this many bytes as JSON; a page always holds at least one session. ``None``:
                no bound but ``limit``.
        """
        return self.sessions.page(limit, after, max_bytes)

    def list_sessions_json(
        self, *, limit: int = 50, after: str | None = None, max_bytes: int | None = None
    ) -> bytes:
        """:meth:`list_sessions` as the server's JSON body, joined from sessions kept encoded.

        A writer keeps each session's encoded bytes while session.json (its stat), its
        records (their cache's token) and records/ (its mtime) are unchanged, so a page of
        sessions read before costs three ``stat`` calls per session and one join.
        """
        return self.sessions.page_json(limit, after, max_bytes)

    def iter_all(self) -> Iterator[SessionRecord]:
        """Every session, oldest first (reads every session.json; for commands, not HTTP)."""
        return self.sessions.iter_all()

    def left_out(self, listed: set[str]) -> list[tuple[str, str]]:
        return self.sessions.left_out(listed)

    @_changes
    def delete_session(self, session_id: str, *, reason: str = "delete") -> TrashEntry:
        """Move a session, files and all, to ``.trash/``; audited. :meth:`restore` undoes it."""
        self.root.ensure_held()
        state = self.sessions.state
        with self.root.prepare(audit=True) as prepared, state.unaudited_moves() as moving:
            with self.sessions.served(session_id):
                entry = self.sessions.move_to_trash(session_id, reason, moving)
            prepared.audit(
                "trash-session",
                session_id,
                trash=entry.name,
                reason=reason,
                title=entry.title,
            )
        return entry

    @_changes
    def purge(self) -> list[TrashEntry]:
        """Move every session to ``.trash/`` (``app data purge``); one audit line."""
        self.root.ensure_held()
        entries: list[TrashEntry] = []
        left: list[Path] = []
        ids = self.sessions.ids()
        moves = self.sessions.state.unaudited_moves()
        with self.root.prepare(audit=True, items=len(ids)) as prepared, moves as moving:
            try:
                for session_id in ids:
                    try:
                        entries.append(self.sessions.move_to_trash(session_id, "purge", moving))
                    except SessionNotFoundError:  # deleted meanwhile, or not followed
                        if (linked := self.sessions_dir / session_id).is_symlink():
                            left.append(linked)
            except KeyboardInterrupt:
                # Ctrl-C, or SIGTERM (which the command line raises so): the one line came at
                # the end, so every session moved so far was left without one, which `app
                # data check` then named (`trash-unaudited`, 100 of them) where the stop's
                # message promised at most the last (red team 59). Said for those moved.
                if entries:
                    _audit_purge(
                        prepared, self.sessions_dir, entries, "interrupted (SIGINT or SIGTERM)"
                    )
                raise
            except OSError as error:
                if not entries:
                    raise  # nothing moved: the storage error says so
                written = _audit_purge(prepared, self.sessions_dir, entries, str(error))
                if isinstance(error, FsyncFailed):
                    # The session it failed on may have moved as well: "the rest are
                    # unchanged" would be untrue, and "run it again" is refused until restart.
                    raise
                cause, maybe_done = partway_cause(error)
                raise StoppedPartwayError(
                    doing="purge",
                    done=len(entries),
                    total=len(ids),
                    cause=f"{cause}: {error.filename}" if error.filename else cause,
                    where=f"in the trash ({self.trash_location})",
                    fix=f"{PARTWAY_RESOLVE}, then run `app data purge` again to move the "
                    "rest; `app sessions restore ID` brings one back",
                    **({} if written else {"audited": self._unaudited(self.root.lines_lost[-1])}),
                    **(
                        {
                            "rest": "the session it stopped at may be in the trash too (the "
                            "filesystem may have made the call it failed: `app sessions list "
                            "--trash` says), and the rest are unchanged"
                        }
                        if maybe_done
                        else {}
                    ),
                ) from error
            prepared.audit(
                "purge",
                self.sessions_dir,
                count=len(entries),
                sessions=[e.session_id for e in entries],
                # By name too: by its sessions alone, an earlier purge's line stood for a
                # later purge's entry of the same session, killed before its own line,
                # which `check` then never logged (red team 52).
                entries=[e.name for e in entries],
                **({"left": [link.name for link in left]} if left else {}),
            )
        for link in left:
            # Said "moved 1 session(s)", exit 0, of a profile that still held two (red team 42).
            log.warning(
                "purge left %s where it is: a symbolic link (to %s) where a session's directory "
                "belongs, which the app never follows (%s)",
                link,
                link.readlink(),
                link_remedy(link, "remove it if it leads nowhere you need"),
            )
        return entries

    # -- files --------------------------------------------------------------------------

    def list_files(self, session_id: str) -> list[FileEntry]:
        """The files of a session: ``name``, ``size``, ``sha256``, ``uploaded_at``."""
        return self.sessions.get(session_id)["files"]

    def file_path(self, session_id: str, name: str) -> tuple[Path, FileEntry]:
        """Where a session's file's bytes are, and its entry (for tests and tools)."""
        return self.files.path(session_id, name)

    def open_file(self, session_id: str, name: str) -> tuple[BinaryIO, FileEntry]:
        """Open a session's file for sending, with its entry; the caller closes the file."""
        return self.files.open(session_id, name)

    def begin_upload(
        self,
        session_id: str,
        name: str,
        *,
        replace: bool = False,
        if_match: IfMatch | None = None,
        digests: Digests | None = None,
    ) -> Upload:
        """Start streaming a file into a session (``replace``: an existing one goes to the trash).

        Everything that can be refused before the first byte is checked here: the lock, the
        id, the name, that the session exists, (unless ``replace``) that the name is free,
        and ``if_match`` (again at the commit, under the session's lock). ``digests`` are
        checked at the commit, against the SHA-256 of the bytes written.
        """
        return self.files.begin_upload(
            session_id, name, replace=replace, if_match=if_match, digests=digests
        )

    def put_file(
        self, session_id: str, name: str, data: bytes | Iterable[bytes], *, replace: bool = False
    ) -> FileEntry:
        """Store a whole file at once (bytes, or an iterable of chunks)."""
        with self.begin_upload(session_id, name, replace=replace) as upload:
            for chunk in [data] if isinstance(data, bytes) else data:
                upload.write(chunk)
            return upload.commit()

    @_changes
    def delete_file(
        self, session_id: str, name: str, *, if_match: IfMatch | None = None
    ) -> TrashEntry:
        """Move one file of a session to ``.trash/`` (only a version ``if_match`` names);
        audited."""
        return self.files.delete(session_id, name, if_match=if_match)

    # -- trash --------------------------------------------------------------------------

    def list_trash(self) -> list[TrashEntry]:
        """Every entry of ``.trash/``, oldest first (one with a broken manifest by its name)."""
        return self.trash.entries()

    @_changes
    def empty_trash(
        self, older_than: timedelta | None = None, *, via: str = "command"
    ) -> list[TrashEntry]:
        """Remove trash entries for good: the only operation that deletes bytes; audited.

        Args:
            older_than: only entries deleted longer ago than this; ``None`` for all.
            via: how it was asked for (``"command"``, ``"http"``), for the audit line.
        """
        # What a crash left half made first: an entry removed while it still waits for
        # its bytes leaves them among a session's blobs, an upload "never acknowledged".
        self._finish_half_entries(None)
        return self.trash.empty(older_than, via=via)

    @_changes
    def restore(
        self, session_id: str, *, file: str | None = None, entry: str | None = None
    ) -> SessionRecord:
        """Bring back the most recently deleted session (or one of its files); audited.

        A file goes back into its session, which must be there (restore the session first).
        Restoring over a session or file that exists again is refused. ``entry``: the trash
        entry to take (its name), which may hold a copy older than the newest.
        """
        self.root.ensure_held()
        check_session_id(session_id)
        # Held to the rule of the build that stored it: the trash may keep it (red team 38).
        name = None if file is None else check_stored_name(file)
        finished = self._finish_half_entries(session_id)
        try:
            return self._restore(session_id, name, entry)
        except (NotInTrashError, RestoreOverwriteError) as missing:
            # A restore run again after one stopped between its move and its entry's removal
            # (SIGKILL) removed what that one left, and said "nothing was changed" (red team
            # 74): the refusal says what it finished. What a replace or a delete stopped
            # partway left is named apart: it was counted as a restore's (red team 75).
            missing.finished = finished.restores_finished
            missing.changes = tuple(finished.changes_finished)
            raise

    def _restore(self, session_id: str, name: str | None, entry: str | None) -> SessionRecord:
        """`restore`, once what a crash left half made in the session's trash is finished."""
        # Refused before anything is opened; the entry is chosen again under the session's
        # lock (`Sessions.restore`, `Files.restore`), and only that choice counts.
        # A FIFO or a link where the newest copy's bytes should be is refused by name here:
        # passed over, "not in the trash" was said of an entry the listing shows.
        if self.trash.chosen(session_id, name, entry, odd=True) is None:
            # A newest copy that lost its bytes (a record `check` kept after its bytes went,
            # red team 48) is named, with what puts it back, not "no file in the trash".
            # Under the session's lock, as `latest` asks: an entry a delete is filling is
            # not one that lost its bytes.
            if name is not None:
                with self.sessions.state.lock_for(session_id):
                    self.trash.chosen(session_id, name, entry, lost=True)
                # A file deleted with its session has no entry of its own: it is in the
                # session's. "No file in the trash" was said of it (red team 55), as the
                # remote backend, which looks at the session first, never says.
                named_or_live = entry is not None or lexists(self.sessions_dir / session_id)
                if not named_or_live and (trashed := self._session_in_trash(session_id)):
                    raise trashed
            if name is None or entry is not None or not self._file_there(session_id, name):
                raise NotInTrashError(session_id, name, entry=entry)
            # A file there with no copy in the trash: `Files.restore` refuses it under the
            # session's lock, saying so and naming the log's restore of it, as the remote
            # backend does. A restore run again after its lost output, the one copy taken,
            # was told "no file ... in the trash", and that `list --trash` shows what can be
            # restored, of the file it had brought back (red team 71 on regress, round b).
        # Everything the restore needs once its move is made is opened before it, the
        # audit log included: a restore that happened is answered as one.
        with self.root.prepare(audit=True) as prepared:
            if name is None:
                session, unreadable, taken = self.sessions.restore(
                    session_id,
                    prepared,
                    entry,
                    lambda taken: prepared.audit("restore-session", session_id, trash=taken.name),
                )
                # Raised after the audit line: a session.json damaged from outside still
                # comes back (and is said to be unreadable), and the log has the move. Said
                # as restored: "cannot read session" alone read as a restore that failed
                # (red team 61).
                if isinstance(unreadable, UnreadableSessionError):
                    raise RestoredUnreadableSessionError(
                        session_id,
                        unreadable.damage,
                        file=unreadable.file,
                        finding=unreadable.finding,
                        entry=taken.name,
                    ) from None
                if unreadable is not None:
                    raise unreadable
                assert session is not None
            else:
                try:
                    session, _ = self.files.restore(
                        session_id,
                        name,
                        prepared,
                        entry,
                        lambda taken: prepared.audit(
                            "restore-file", f"{session_id}/{name}", trash=taken.name
                        ),
                    )
                except SessionNotFoundError as missing:
                    if type(missing) is not SessionNotFoundError:
                        raise
                    raise self._session_in_trash(session_id) or missing from None
        if name is None:
            # The restore is made and audited: a migration that cannot be made now (out of
            # descriptors, a failed fsync) is left to the next start-up or repair, which make
            # it, and must not answer a restore that happened as one that failed.
            with contextlib.suppress(OSError, AppError):
                if self._in_first_layout(session_id):
                    session = self._migrate_restored(session_id)
        return session

    def _file_there(self, session_id: str, name: str) -> bool:
        """Whether the session has a record of the file ``name`` (a look, never raised)."""
        try:
            return lexists(self.files.record_path(session_id, name))
        except (AppError, OSError):
            return False

    def _session_in_trash(self, session_id: str) -> SessionNotFoundError | None:
        """The refusal of a file's restore whose session is in the trash, naming its entry
        (and `app sessions restore`); None if it is not there either."""
        entry = self.deleted_entry(session_id)
        return None if entry is None else SessionNotFoundError(session_id, in_trash=entry)

    def deleted_entry(self, session_id: str, file: str | None = None) -> str | None:
        """The newest trash entry that holds the deleted session (or its ``file``; its
        manifests read by name first, as a restore finds it); None where none does or the
        trash cannot be read now (its own refusal is the restore's to give)."""
        try:
            # A file's among the session's newest entries of files alone: a 404 of a name
            # never used read every manifest of the session's trash (0.15 s of CPU next to
            # 2,000), a cost any client could ask for. A DELETE sent again after its lost
            # answer finds its entry the newest, or next to it.
            within = None if file is None else FILE_ENTRIES_LOOKED_AT
            # ``lost``: a newer entry of the file that lost its bytes is the restore's
            # refusal, not a reason to name the one before it: passed over, the 404 named an
            # older entry as "its newest version" and a `restore --file` that failed (exit 65;
            # red team 69 on regress, e). No hint then: the restore's refusal says what to do.
            entry = self.trash.latest(session_id, file, within=within, indexed=True, lost=True)
        except (AppError, OSError):
            return None
        if entry is None or (file is not None and entry.reason != "delete"):
            return None  # a file's newest version replaced, not deleted: not its DELETE's
        return entry.name

    def _in_first_layout(self, session_id: str) -> bool:
        """Whether the session's files are still listed in its session.json (bytes in
        files/), as the first build wrote them."""
        try:
            meta = read_meta(self.sessions_dir / session_id, session_id, hashed=self.root.hashed)
        except (SessionNotFoundError, UnreadableSessionError):
            return False
        return isinstance(meta.get(LEGACY_FILES_KEY), list)

    def _migrate_restored(self, session_id: str) -> SessionRecord:
        """A session deleted before an upgrade and restored after it comes back in the first
        build's layout, which only a start-up migrated: `app data check` failed (exit 65)
        until the next one (red team 38). It is given the start-up's repair of that session
        now (audited as one), damage from outside the app left alone as there."""
        self._repair_now(lambda checker: checker.check_session(session_id))
        return self.sessions.get(session_id)

    def _finish_half_entries(self, session_id: str | None) -> Checker:
        """What a crash left half made in the session's trash entries (``None``: every
        session's), repaired (audited).

        A restore or an `empty-trash` may come before any start-up after a crash (stop,
        restore, start): the newest entry could still wait for the bytes a delete or a
        replace committed away, and the restore then brought back an older version (red
        team 30), the `empty-trash` left them behind as an orphan (red team 31). Each entry
        under its session's lock, which every change of its files takes: an entry another
        thread is making is not a crash's.

        Returns the repair's checker, which says what it finished (`restores_finished`,
        `changes_finished`).
        """
        return self._repair_now(lambda checker: checker.finish_half_entries(session_id))

    def _repair_now(self, step: Callable[[Checker], None]) -> Checker:
        """One step of the start-up's repair, made now (audited, as the start-up's is);
        returns its checker."""
        from app.check import Checker

        checker = Checker(self, repair=True, thorough=False)
        try:
            with self.root.changing():
                step(checker)
        finally:
            self._audit_repairs(checker)
        return checker

    def _audit_repairs(self, checker: Checker) -> None:
        """The ``check-repair`` audit line of what ``checker`` found and did (if anything).

        Also when an fsync stopped the repair (`app.check.Checker.item`): the log then
        refuses the line, which goes, whole, to the process's log (`DataRoot.audit`) with
        the repairs already made.
        """
        if checker.findings:
            self.root.audit(
                "check-repair", self.root.path, findings=[f.to_dict() for f in checker.findings]
            )

    def _unaudited(self, why: str) -> str:
        """A stopped command's ``audited`` when its line went to the process's log alone."""
        return unaudited(why, SERVER_LOG if self.root.kind == "server" else COMMAND_LOG)

    # -- consistency --------------------------------------------------------------------

    def check(
        self, *, repair: bool = False, thorough: bool = True, hash_bytes: bool = True
    ) -> CheckReport:
        """Find (and with ``repair``, reconcile) what an interrupted write left behind.

        Every write has one commit point, so a crash leaves at most: a file in ``.tmp/``; a
        ``sessions/.new-*`` directory; a trash entry that is empty, holds only its manifest,
        still waits for the blob it names, or has no audit line; a blob no record names.
        Repairing never deletes acknowledged bytes: a blob without a record goes to the
        trash, a half trash entry whose bytes are still in the session is removed (the
        session was never changed), one whose switch happened is finished. Each repair is
        reported in one ``check-repair`` audit line, and a trash entry that lacked its audit
        line gets the line it should have had.

        Read-only (``repair=False``) it changes nothing and takes no lock. Next to a live
        server, what a write in flight leaves between its steps looks like a leftover: what
        it finds is read again after a moment without a change in flight, and only what is
        still there is reported.

        Args:
            repair: fix what can be fixed; the root must be held by this process.
            thorough: read every file record. ``False`` (a server's start-up) reads only the
                sessions whose number of records and blobs differ, which is where every
                crash of a write leaves its trace; a record whose bytes were lost to damage
                from outside the app, next to bytes without a record, then goes unseen.
            hash_bytes: with ``thorough``, read every file's bytes and compare their SHA-256
                with the acknowledged one; ``False`` (`app data check --quick`) compares
                sizes only and reads no file's bytes.
        """
        from app.check import Checker

        if repair:
            self.root.ensure_held()
        lost_before = len(self.root.lines_lost)  # the open's (its clear-tmp), if any
        checker = Checker(self, repair, thorough, hash_bytes=hash_bytes)
        try:
            with self.root.changing() if repair else contextlib.nullcontext():
                checker.run()
        except FsyncFailed:
            if repair:
                self._audit_repairs(checker)  # to the process's log: the audit log refuses
            raise
        except BaseException as error:
            made = sum(1 for finding in checker.findings if finding.repaired)
            if not made:
                raise  # nothing changed: the error says so
            # Stopped between its repairs (a listing of sessions/ or .trash/ refused, Ctrl-C):
            # those made are audited, and not said as "nothing was changed" (red team 73).
            lost = len(self.root.lines_lost)
            self._audit_repairs(checker)
            if not isinstance(error, OSError):
                raise
            # The line refused too (the disk that refused the listing): said so, with where
            # it went, not "audited" (red team 73 on regress c).
            refused = self.root.lines_lost[lost:]
            cause, maybe_done = partway_cause(error)
            # A server's start-up runs this repair: said as its own, as `app serve` stopped.
            starting = self.root.kind == "server"
            raise RepairStoppedPartwayError(
                doing="the start-up repair of `app serve`"
                if starting
                else "`app data check --repair`",
                done=made,
                total=made,
                cause=f"{cause}: {error.filename}" if error.filename else cause,
                where="kept",
                fix=f"{PARTWAY_RESOLVE}, then run `app data check --repair` again to "
                "check the rest",
                **({"audited": self._unaudited(refused[0])} if refused else {}),
                **(
                    {
                        "rest": "the call it stopped at may have been made (`app data check` "
                        "says), and the rest of the data root was not checked"
                    }
                    if maybe_done
                    else {}
                ),
            ) from error
        finally:
            if repair:
                self.root.store_state.records.clear()  # repairs change records behind it
        if repair:
            self._audit_repairs(checker)
        if repair:
            # A line this command could not write (this repair's, or the open's clear-tmp)
            # went to its own log alone: the report says so, as the remote backend's does.
            # Only the open's lost, the repairs' lines written: the report says which (red
            # team 64, regress: it said the log could not record repairs it held).
            audited = len(self.root.lines_lost) == lost_before
            return CheckReport(checker.findings, repair, self.root.line_lost, audited)
        if not checker.findings:
            return CheckReport(checker.findings, repair)
        # Next to a live writer a change in flight looks like a crashed one: what is still
        # there after a moment without changes in flight is not one (each change leaves
        # names of its own, never reused), and only that is reported.
        settled = self.root.quiescent()
        again = Checker(self, repair, thorough, hash_bytes=hash_bytes)
        again.run()
        seen = {(f.problem, f.target) for f in checker.findings}
        findings = [f for f in again.findings if (f.problem, f.target) in seen]
        if not settled:
            findings = [
                dataclasses.replace(
                    f, detail=f"{f.detail} (changes were in flight throughout: may be one)"
                )
                for f in findings
            ]
        return CheckReport(findings, repair)


def _audit_purge(
    prepared: Prepared, sessions_dir: Path, entries: list[TrashEntry], why: str
) -> bool:
    """The line of a purge stopped partway, for the sessions it moved (`stopped`: why);
    whether it was written."""
    return prepared.audit(
        "purge",
        sessions_dir,
        count=len(entries),
        sessions=[e.session_id for e in entries],
        entries=[e.name for e in entries],
        stopped=why,
    )


def _read_only(path: Path) -> bool:
    """Whether `path`'s filesystem, as mounted there, takes no writes now (one ``statvfs``,
    asked at every ``GET /health`` with the layout's lstats); ``False`` if it cannot say."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False
