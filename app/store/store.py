"""Sessions and their files on one open data root: the local implementation of the seam.

Guarantees, and who provides them:

* **One commit point per change.** A file's bytes go to a new, immutable blob first; the
  rename of its record (``records/<name>``) over the old one is the single instant the file
  switches, bytes and record together. The old blob is retired to the trash only after that
  switch, into a trash entry whose manifest was written before it, so a crash at any
  instant leaves the old acknowledged state or the new one, and ``check`` can finish or
  undo the retirement. Chosen over an intent journal: the filesystem's atomic rename is
  already the journal, and readers need no replay.
* **Cost independent of the number of files.** An upload writes one blob and one small
  record and reads one record; nothing rewrites a list of every file. A writer keeps
  recently read sessions' records in memory
  (:class:`app.store.concurrency.RecordCache`).
* **Atomic.** Every byte is written to a temporary file in ``.tmp/`` (same filesystem),
  fsynced, and renamed into place, and the directory is fsynced
  (:meth:`app.dataroot.DataRoot.commit_temp_file`). A new session directory appears
  complete, ``session.json`` included, by one rename. What a crash leaves behind is found
  and reconciled by :meth:`Store.check` (``app data check``, and every server start-up).
* **Ordered by creation.** Session ids are time-ordered, so the directory listing sorted
  by name is the creation order and ``GET /sessions`` reads only the sessions of its page.
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
changes to one session are serialised by a per-session lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Self, cast

from app.dataroot import fsync_dir, write_new_file
from app.errors import (
    AppError,
    BadRequestError,
    FileExistsInSessionError,
    FileNotFoundInSessionError,
    InvalidNameError,
    LockLostError,
    NotInTrashError,
    SessionNotFoundError,
    TooManyFilesError,
)
from app.names import check_file_name
from app.storage import (
    MAX_METADATA_BYTES,
    MAX_TITLE_CHARS,
    CheckReport,
    FileEntry,
    Page,
    SessionRecord,
    TrashEntry,
)
from app.store.ids import ID_RE, check_session_id, new_session_id
from app.store.records import (
    BLOBS_DIR,
    LEGACY_FILES_DIR,
    LEGACY_FILES_KEY,
    MISSING_ERRNOS,
    NEW_PREFIX,
    RECORDS_DIR,
    SESSION_FILE,
    TRASHED_SESSION,
    FileRecord,
    load_record,
    open_regular,
    public,
    read_meta,
    record_blob,
    scan_records,
    upload_order,
)
from app.store.trash import Trash
from app.store.upload import Upload

if TYPE_CHECKING:
    from app.dataroot import DataRoot
    from app.storage import HolderWatch

__all__ = ["MAX_METADATA_BYTES", "MAX_TITLE_CHARS", "Store"]

log = logging.getLogger("app.store")


class Store:
    """Sessions and their files on one open data root (a :class:`app.storage.Storage`).

    Args:
        root: an open data root (:func:`app.dataroot.open_root`). Reading works on a
            read-only root; every change needs a writer. Closing the store closes the root.
    """

    def __init__(self, root: DataRoot) -> None:
        self.root = root
        self.max_upload_bytes: int = root.config.max_upload_bytes
        self.max_files: int = root.config.max_files_per_session
        self.state = root.store_state
        self.trash = Trash(root)
        if root.writable:
            self._clear_unfinished_sessions()

    # -- the root --------------------------------------------------------------------

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

    def audit(self, operation: str, target: str | Path, **details: Any) -> None:
        self.root.audit(operation, target, **details)

    def publish(self, **fields: Any) -> None:
        assert self.root.lock is not None, "only a writer publishes"
        self.root.lock.update(**fields)

    def watch(self, interval: float, on_lost: Callable[[str], object]) -> HolderWatch:
        from app.lock import LockWatcher

        assert self.root.lock is not None, "only a writer is watched"
        return LockWatcher(self.root.lock, interval, on_lost).start()

    def lost_error(self, reason: str) -> AppError:
        assert self.root.lock is not None
        return LockLostError(self.root.lock.path, reason)

    def close(self) -> None:
        self.root.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- paths and the session lock --------------------------------------------------

    def _session_dir(self, session_id: str) -> Path:
        return self.sessions_dir / check_session_id(session_id)

    def _record_path(self, session_id: str, name: str) -> Path:
        records = self._session_dir(session_id) / RECORDS_DIR
        path = records / check_file_name(name)
        # The checks above already make escaping impossible; this says so at the place
        # where a path is built, in case the rules ever loosen.
        if path.parent != records or os.path.normpath(path) != str(path):
            raise InvalidNameError("file name", name, "it does not name a file in the session")
        return path

    @contextlib.contextmanager
    def _locked(self, session_id: str) -> Iterator[Path]:
        """Hold the session's lock, with the session there (else SessionNotFoundError)."""
        directory = self._session_dir(session_id)
        with self.state.lock_for(session_id):
            read_meta(directory, session_id)
            yield directory

    def _switch_record(
        self, session_id: str, path: Path, record: FileRecord, undo: Callable[[], None]
    ) -> None:
        """The commit point of a file change: write its record; on failure, undo if unswitched.

        Whatever happens, the record cache learns of it. A failure after the rename (an
        fsync of the directory) leaves the switch made, and it must then stay made.
        """
        try:
            self.root.atomic_write_json(path, record)
        except BaseException:
            self.state.records.changed(session_id)  # whatever happened, read it again
            if record_blob(path) != record["blob"]:
                undo()
            raise
        self.state.records.changed(session_id, path.name, record)

    def _ensure_dir(self, directory: Path, name: str) -> Path:
        path = directory / name
        if not path.is_dir():
            with contextlib.suppress(FileExistsError):
                path.mkdir(mode=0o700)
            fsync_dir(directory)
        return path

    def _audit_after_commit(self, operation: str, target: str, **details: Any) -> None:
        # The change is made and must be acknowledged as made; a missing line is found and
        # written by `check` (a trash entry without its audit line).
        try:
            self.root.audit(operation, target, **details)
        except OSError as error:
            log.warning("could not write the audit line of %s %s (%s)", operation, target, error)

    def _clear_unfinished_sessions(self) -> None:
        # A `.new-<id>` directory is a create that crashed before its rename: it was never
        # acknowledged, and holds at most a session.json without files. One that another
        # Store on this root is creating right now is not a crash's.
        with self.state.creating_lock:
            with os.scandir(self.sessions_dir) as entries:
                stale = [
                    e.path
                    for e in entries
                    if e.name.startswith(NEW_PREFIX) and e.name not in self.state.creating
                ]
            for path in stale:
                shutil.rmtree(path, ignore_errors=True)
        if stale:
            self.root.audit(
                "clear-unfinished-create",
                self.sessions_dir,
                removed=sorted(Path(p).name for p in stale),
            )

    # -- sessions ---------------------------------------------------------------------

    def create_session(
        self, title: str = "", metadata: dict[str, Any] | None = None
    ) -> SessionRecord:
        """Create a session, durably, and return it.

        Args:
            title: a human title, at most :data:`MAX_TITLE_CHARS` characters.
            metadata: any JSON object, at most :data:`MAX_METADATA_BYTES` as JSON.
        """
        self.root.ensure_held()
        session = _new_session(title, metadata)
        stored = {k: v for k, v in session.items() if k != "files"}  # files are records/
        data = (json.dumps(stored, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
        # The staging directory is the temporary file here: it is complete and synced before
        # one same-directory rename makes the session appear. Writing session.json inside it
        # directly (rather than through .tmp/) saves a cross-directory rename, which takes a
        # filesystem-wide lock, on the path every POST /sessions takes.
        staging = self.sessions_dir / f"{NEW_PREFIX}{session['id']}"
        with self.state.creating_lock:
            self.state.creating.add(staging.name)
            staging.mkdir(mode=0o700)
        try:
            write_new_file(staging / SESSION_FILE, data)
            fsync_dir(staging)
            self.root.ensure_held()  # the last moment before the session appears
            staging.rename(self.sessions_dir / session["id"])
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            with self.state.creating_lock:
                self.state.creating.discard(staging.name)
        self.state.sessions_sync.sync()
        self.state.index_update(add=session["id"])
        return session

    def get_session(self, session_id: str) -> SessionRecord:
        """The session with id ``session_id``, with its files."""
        return self._read_session(self._session_dir(session_id), session_id)

    def require_session(self, session_id: str) -> None:
        """Check that the session exists, reading its session.json only."""
        read_meta(self._session_dir(session_id), session_id)

    def _read_session(self, directory: Path, session_id: str) -> SessionRecord:
        session = read_meta(directory, session_id)
        if isinstance(session.get(LEGACY_FILES_KEY), list):
            return cast(SessionRecord, session)  # not migrated yet (a writer's check does)
        records = self._read_records(directory)
        session["files"] = [public(r) for r in records]
        # Uploads and deletes never rewrite session.json: the session changed last when its
        # newest record did, or when a record was removed (the directory's mtime says when).
        times = [session.get("updated_at") or "", *(r.get("uploaded_at") or "" for r in records)]
        with contextlib.suppress(OSError):
            mtime = (directory / RECORDS_DIR).lstat().st_mtime_ns
            times.append(_iso(datetime.fromtimestamp(mtime / 1e9, UTC)))
        session["updated_at"] = max(times)
        return cast(SessionRecord, dict(sorted(session.items())))  # session.json's key order

    def _read_records(self, directory: Path) -> list[FileRecord]:
        cache = self.state.records if self.root.writable else None
        if cache is not None:
            cached, token = cache.get(directory.name)
            if cached is not None:
                cached.sort(key=upload_order)
                return cached
        records = scan_records(directory)
        if cache is not None:
            cache.store(directory.name, records, token)
        return records

    def migrate_legacy(self, directory: Path, session_id: str, meta: dict[str, Any]) -> None:
        """Give each file of a session written before records/ and blobs/ its record and blob."""
        # Each step can be repeated after a crash: the record is written first (naming the
        # blob the bytes will have), then the bytes are moved; session.json drops its list
        # last, which is the migration's commit. Until then readers use the list.
        legacy = directory / LEGACY_FILES_DIR
        blobs = self._ensure_dir(directory, BLOBS_DIR)
        self._ensure_dir(directory, RECORDS_DIR)
        for old in meta[LEGACY_FILES_KEY]:
            name = check_file_name(str(old.get("name")))
            record_path = directory / RECORDS_DIR / name
            record = load_record(record_path)
            if record is None:
                record = {**public(old), "name": name, "blob": new_session_id()}
                self.root.atomic_write_json(record_path, record)
            source = legacy / name
            if not (blobs / record["blob"]).exists() and source.is_file():
                source.rename(blobs / record["blob"])
                fsync_dir(blobs)
        fsync_dir(directory / RECORDS_DIR)
        meta = {k: v for k, v in meta.items() if k != LEGACY_FILES_KEY}
        self.root.atomic_write_json(directory / SESSION_FILE, meta)
        with contextlib.suppress(OSError):
            legacy.rmdir()  # anything left there was not listed: kept for a human

    def session_ids(self) -> list[str]:
        """Every session id, oldest first (a directory listing; no session.json is read)."""
        return self.state.ids(self.scan_ids, keep=self.root.writable)

    def scan_ids(self) -> list[str]:
        """Every session id, oldest first, from the directory itself (never the index)."""
        try:
            with os.scandir(self.sessions_dir) as entries:
                names = [e.name for e in entries if len(e.name) == 32 and ID_RE.fullmatch(e.name)]
        except FileNotFoundError:  # a reader on a root that was never opened as a writer
            return []
        names.sort()
        return names

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
        if limit < 1:
            raise BadRequestError(f"limit must be at least 1, not {limit}")
        cursor = None if after is None else check_session_id(after)
        chosen, start, total = self.state.window(
            self.scan_ids, keep=self.root.writable, after=cursor, limit=limit
        )
        items: list[SessionRecord] = []
        size = 0
        for session_id in chosen:
            try:
                session = self._read_session(self.sessions_dir / session_id, session_id)
            except SessionNotFoundError:
                continue  # deleted between the listing and this read: simply not shown
            if max_bytes is not None:
                # ASCII-escaped JSON is never shorter than the UTF-8 of the answer, and this is
                # json's C encoder: the bound holds, cheaply. 1,000 sessions of 62 KB metadata
                # once made one 62 MB page.
                size += len(json.dumps(session))
                if items and size > max_bytes:
                    return Page(items=items, total=total, next=items[-1]["id"])
            items.append(session)
        more = start + limit < total
        return Page(items=items, total=total, next=chosen[-1] if more and chosen else None)

    def iter_all(self) -> Iterator[SessionRecord]:
        """Every session, oldest first (reads every session.json; for commands, not HTTP)."""
        for session_id in self.session_ids():
            with contextlib.suppress(SessionNotFoundError):
                yield self._read_session(self.sessions_dir / session_id, session_id)

    def delete_session(self, session_id: str, *, reason: str = "delete") -> TrashEntry:
        """Move a session, files and all, to ``.trash/``; audited. :meth:`restore` undoes it."""
        self.root.ensure_held()
        entry = self._trash_session(session_id, reason)
        self._audit_after_commit(
            "trash-session", session_id, trash=entry.name, reason=reason, title=entry.title
        )
        return entry

    def _trash_session(self, session_id: str, reason: str) -> TrashEntry:
        directory = self._session_dir(session_id)
        with self.state.lock_for(session_id):
            session = self._read_session(directory, session_id)
            entry = self.trash.new_entry(
                session_id, "session", None, reason, title=session.get("title")
            )
            # The data lives in sessions/ or in .trash/, never in .tmp/ (which a restart
            # clears): the manifest is written first, then the directory moves in one rename.
            try:
                directory.rename(entry.path / TRASHED_SESSION)
                self.state.records.changed(session_id)
                self.state.index_update(remove=session_id)
            except BaseException:
                self.trash.remove_empty(entry)
                raise
        fsync_dir(self.sessions_dir)
        fsync_dir(entry.path)
        return entry

    def purge(self) -> list[TrashEntry]:
        """Move every session to ``.trash/`` (``app data purge``); one audit line."""
        self.root.ensure_held()
        entries = []
        for session_id in self.session_ids():
            with contextlib.suppress(SessionNotFoundError):
                entries.append(self._trash_session(session_id, "purge"))
        self.root.audit(
            "purge",
            self.sessions_dir,
            count=len(entries),
            sessions=[e.session_id for e in entries],
        )
        return entries

    # -- files ------------------------------------------------------------------------

    def list_files(self, session_id: str) -> list[FileEntry]:
        """The files of a session: ``name``, ``size``, ``sha256``, ``uploaded_at``."""
        return self.get_session(session_id)["files"]

    def file_path(self, session_id: str, name: str) -> tuple[Path, FileEntry]:
        """Where a session's file's bytes are, and its entry (for tests and tools)."""
        record_path = self._record_path(session_id, name)
        directory = self._session_dir(session_id)
        read_meta(directory, session_id)
        record = load_record(record_path)
        if record is not None:
            blob = directory / BLOBS_DIR / record["blob"]
            if not blob.parent.is_symlink() and blob.is_file() and not blob.is_symlink():
                return blob, public(record)
        raise FileNotFoundInSessionError(session_id, record_path.name)

    def open_file(self, session_id: str, name: str) -> tuple[BinaryIO, FileEntry]:
        """Open a session's file for sending, with its entry; the caller closes the file.

        The record and its blob are read under the session's lock, so the entry describes
        exactly these bytes. A blob never changes once written, and a replace or a delete
        moves it aside rather than changing it, so a download that found the file sends it
        whole, and one that did not is :class:`FileNotFoundInSessionError`.
        """
        record_path = self._record_path(session_id, name)
        with self._locked(session_id) as directory:
            blobs = directory / BLOBS_DIR
            record = None if record_path.parent.is_symlink() else load_record(record_path)
            if record is not None and not blobs.is_symlink():
                try:
                    file = open(blobs / record["blob"], "rb", opener=open_regular)  # noqa: SIM115
                except OSError as error:
                    if error.errno not in MISSING_ERRNOS:
                        raise
                else:
                    if stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                        return file, public(record)
                    file.close()
        raise FileNotFoundInSessionError(session_id, record_path.name)

    def begin_upload(self, session_id: str, name: str, *, replace: bool = False) -> Upload:
        """Start streaming a file into a session; write to the upload, then commit it.

        Everything that can be refused before the first byte is checked here: the lock, the
        id, the name, that the session exists, and (unless ``replace``) that the name is free.
        Reads session.json and one record only, however many files the session has.
        """
        record_path = self._record_path(session_id, name)
        self.root.ensure_held()
        read_meta(self._session_dir(session_id), session_id)
        if load_record(record_path) is not None:
            if not replace:
                raise FileExistsInSessionError(session_id, record_path.name)
        else:
            self._refuse_one_file_too_many(session_id, record_path.parent)
        return Upload(self, session_id, record_path.name, replace=replace)

    def _refuse_one_file_too_many(self, session_id: str, records: Path) -> None:
        # Counted only for a new name (a directory listing, not a read of the records), once
        # before the bytes arrive and again under the session lock before the commit.
        try:
            with os.scandir(records) as entries:
                count = sum(1 for entry in entries if not entry.name.startswith("."))
        except FileNotFoundError:
            return
        if count >= self.max_files:
            raise TooManyFilesError(session_id, self.max_files)

    def put_file(
        self, session_id: str, name: str, data: bytes | Iterable[bytes], *, replace: bool = False
    ) -> FileEntry:
        """Store a whole file at once (bytes, or an iterable of chunks)."""
        with self.begin_upload(session_id, name, replace=replace) as upload:
            for chunk in [data] if isinstance(data, bytes) else data:
                upload.write(chunk)
            return upload.commit()

    def commit_upload(self, upload: Upload, entry: FileEntry) -> None:
        """Switch a complete upload into its session (:meth:`Upload.commit` calls it)."""
        session_id, name = upload.session_id, upload.name
        record_path = self._record_path(session_id, name)
        self.root.ensure_held()
        retired: TrashEntry | None = None
        with self._locked(session_id) as directory:  # deleted meanwhile: 404
            old = load_record(record_path)
            if old is not None and not upload.replace:
                raise FileExistsInSessionError(session_id, name)
            if old is None:
                self._refuse_one_file_too_many(session_id, record_path.parent)
            upload.replaced = old is not None
            blobs = self._ensure_dir(directory, BLOBS_DIR)
            self._ensure_dir(directory, RECORDS_DIR)
            version = new_session_id()
            # The bytes go under a new, immutable name; nothing refers to them yet.
            self.root.commit_temp_file(upload.temp_path, blobs / version)

            def undo() -> None:
                with contextlib.suppress(OSError):
                    (blobs / version).unlink()
                if retired is not None:
                    self.trash.remove_empty(retired)

            try:
                if old is not None:
                    # Before the switch: a crash right after it leaves a manifest saying
                    # where the old bytes go, and `check` finishes the move.
                    retired = self.trash.new_entry(
                        session_id, "file", name, "replace", previous=public(old), blob=old["blob"]
                    )
            except BaseException:
                undo()
                raise
            self._switch_record(session_id, record_path, {**entry, "blob": version}, undo)
            if old is not None and retired is not None:
                self._retire_blob(directory, old["blob"], retired, name)
        if retired is not None:
            self._audit_after_commit("replace-file", f"{session_id}/{name}", trash=retired.name)

    def _retire_blob(self, directory: Path, blob: str, entry: TrashEntry, name: str) -> None:
        # After the switch the old blob is no longer the file; moving it into its trash entry
        # may fail (a full disk) without undoing anything: `check` finishes the move.
        try:
            (directory / BLOBS_DIR / blob).rename(entry.path / name)
            fsync_dir(entry.path)
            fsync_dir(directory / BLOBS_DIR)
        except OSError as error:
            log.warning("could not move blob %s to the trash yet (%s); `check` will", blob, error)

    def delete_file(self, session_id: str, name: str) -> TrashEntry:
        """Move one file of a session to ``.trash/``; audited."""
        self.root.ensure_held()
        record_path = self._record_path(session_id, name)
        name = record_path.name
        with self._locked(session_id) as directory:
            old = load_record(record_path)
            if old is None or not (directory / BLOBS_DIR / old["blob"]).is_file():
                raise FileNotFoundInSessionError(session_id, name)
            entry = self.trash.new_entry(
                session_id, "file", name, "delete", previous=public(old), blob=old["blob"]
            )
            try:
                self.root.ensure_held()
                record_path.unlink()  # the commit point; needs no free space
            except BaseException:
                self.trash.remove_empty(entry)
                raise
            self.state.records.changed(session_id, name, None)
            fsync_dir(record_path.parent)
            self._retire_blob(directory, old["blob"], entry, name)
        self._audit_after_commit("trash-file", f"{session_id}/{name}", trash=entry.name)
        return entry

    # -- trash ------------------------------------------------------------------------

    def list_trash(self) -> list[TrashEntry]:
        """Every entry of ``.trash/``, oldest first (one with a broken manifest by its name)."""
        return self.trash.entries()

    def empty_trash(
        self, older_than: timedelta | None = None, *, via: str = "command"
    ) -> list[TrashEntry]:
        """Remove trash entries for good: the only operation that deletes bytes; audited.

        Args:
            older_than: only entries deleted longer ago than this; ``None`` for all.
            via: how it was asked for (``"command"``, ``"http"``), for the audit line.
        """
        return self.trash.empty(older_than, via=via)

    def restore(self, session_id: str, *, file: str | None = None) -> SessionRecord:
        """Bring back the most recently deleted session (or one of its files); audited.

        A file goes back into its session, which must be there (restore the session first).
        Restoring over a session or file that exists again is refused.
        """
        self.root.ensure_held()
        check_session_id(session_id)
        name = None if file is None else check_file_name(file)
        candidates = [
            e
            for e in self.trash.entries()
            if e.session_id == session_id
            and (e.kind == "session" if name is None else (e.kind == "file" and e.file == name))
        ]
        source = (
            [e for e in candidates if (e.path / TRASHED_SESSION).is_dir()]
            if name is None
            else [e for e in candidates if (e.path / name).is_file()]
        )
        if not source:
            raise NotInTrashError(session_id, name)
        entry = source[-1]
        if name is None:
            session = self._restore_session(entry)
            self.root.audit("restore-session", session_id, trash=entry.name)
        else:
            session = self._restore_file(entry, name)
            self.root.audit("restore-file", f"{session_id}/{name}", trash=entry.name)
        return session

    def _restore_session(self, entry: TrashEntry) -> SessionRecord:
        dest = self.sessions_dir / entry.session_id
        with self.state.lock_for(entry.session_id):
            if dest.exists():
                raise BadRequestError(
                    f"session {entry.session_id!r} exists again; refusing to overwrite it with "
                    f"the copy in {entry.path}. Delete the current one first if you mean it"
                )
            (entry.path / TRASHED_SESSION).rename(dest)
            self.state.records.changed(entry.session_id)
            self.state.index_update(add=entry.session_id)
            fsync_dir(self.sessions_dir)
            self.trash.remove_empty(entry)
            return self._read_session(dest, entry.session_id)

    def _restore_file(self, entry: TrashEntry, name: str) -> SessionRecord:
        session_id = entry.session_id
        record_path = self._record_path(session_id, name)
        with self._locked(session_id) as directory:
            if load_record(record_path) is not None:
                raise BadRequestError(
                    f"session {session_id!r} has a file {name!r} again; refusing to overwrite "
                    f"it with the copy in {entry.path}. Delete the current one first"
                )
            manifest = self.trash.read_manifest(entry)
            previous: FileEntry | dict[str, Any] = manifest.get("entry") or {}
            blobs = self._ensure_dir(directory, BLOBS_DIR)
            self._ensure_dir(directory, RECORDS_DIR)
            # Back under the blob name the manifest gives: a crash before the record is
            # written leaves exactly what `check` moves back into this entry.
            blob = manifest.get("blob")
            if not (isinstance(blob, str) and ID_RE.fullmatch(blob)) or (blobs / blob).exists():
                blob = new_session_id()
            size = (entry.path / name).stat().st_size
            (entry.path / name).rename(blobs / blob)
            fsync_dir(blobs)
            fsync_dir(entry.path)
            record: FileRecord = {
                "name": name,
                "size": size,
                "sha256": previous.get("sha256"),
                "uploaded_at": previous.get("uploaded_at"),
                "blob": blob,
            }

            def undo() -> None:
                with contextlib.suppress(OSError):
                    (blobs / blob).rename(entry.path / name)

            self._switch_record(session_id, record_path, record, undo)
            self.trash.remove_empty(entry)
            return self._read_session(directory, session_id)

    # -- consistency --------------------------------------------------------------------

    def check(self, *, repair: bool = False, thorough: bool = True) -> CheckReport:
        """Find (and with ``repair``, reconcile) what an interrupted write left behind.

        Every write has one commit point (see the module docstring), so a crash leaves at
        most: a file in ``.tmp/``; a ``sessions/.new-*`` directory; a trash entry that is
        empty, holds only its manifest, still waits for the blob it names, or has no audit
        line; a blob no record names. Repairing never deletes acknowledged bytes: a blob
        without a record goes to the trash, a half trash entry whose bytes are still in the
        session is removed (the session was never changed), one whose switch happened is
        finished. Each repair is reported in one ``check-repair`` audit line, and a trash
        entry that lacked its audit line gets the line it should have had.

        Read-only (``repair=False``) it changes nothing and takes no lock; next to a live
        server it describes one moment, and a write in flight can look like a leftover.

        Args:
            repair: fix what can be fixed; the root must be held by this process.
            thorough: read every file record. ``False`` (a server's start-up) reads only the
                sessions whose number of records and blobs differ, which is where every
                crash of a write leaves its trace; a record whose bytes were lost to damage
                from outside the app, next to bytes without a record, then goes unseen.
        """
        from app.check import Checker

        if repair:
            self.root.ensure_held()
        checker = Checker(self, repair, thorough)
        try:
            checker.run()
        finally:
            if repair:
                self.state.records.clear()  # repairs change records behind the cache
        if repair and checker.findings:
            self.root.audit(
                "check-repair",
                self.root.path,
                findings=[f.to_dict() for f in checker.findings],
            )
        return CheckReport(checker.findings, repair)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def _new_session(title: str, metadata: dict[str, Any] | None) -> SessionRecord:
    if not isinstance(title, str):
        raise BadRequestError("title must be a string")
    if len(title) > MAX_TITLE_CHARS:
        raise BadRequestError(
            f"title is {len(title)} characters long; the limit is {MAX_TITLE_CHARS}"
        )
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise BadRequestError("metadata must be a JSON object")
    try:
        size = len(json.dumps(metadata, separators=(",", ":")).encode())
    except (TypeError, ValueError) as error:
        raise BadRequestError(f"metadata is not JSON-serialisable: {error}") from None
    if size > MAX_METADATA_BYTES:
        raise BadRequestError(
            f"metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}"
        )
    now = _iso(datetime.now(UTC))
    return {
        "id": new_session_id(),
        "title": title,
        "metadata": metadata,
        "created_at": now,
        "updated_at": now,
        "files": [],
    }
