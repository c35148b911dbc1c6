"""Sessions and their files on an open data root: atomic writes, streamed uploads, soft delete.

Layout inside the data root (see :mod:`app.dataroot` for the root itself)::

    sessions/<id>/session.json      the session: id, title, metadata, times (not its files)
    sessions/<id>/records/<name>    one file's record (JSON): size, sha256, time, blob
    sessions/<id>/blobs/<version>   the bytes a record names; never changed once written
    sessions/.new-<id>/             a session being created (renamed to <id> when complete)
    .trash/<timestamp>-<id>/        a deleted session: trash.json + session/
    .trash/<timestamp>-<id>-file-<hex>/   a deleted or replaced file: trash.json + <name>
    .tmp/holder-<pid>-<hex>/        one writer's uploads and records in flight

Guarantees, and who provides them:

* **One commit point per change.** A file's bytes go to a new, immutable blob first; the
  rename of its record (``records/<name>``) over the old one is the single instant the file
  switches, bytes and record together. The old blob is retired to the trash only after that
  switch, into a trash entry whose manifest was written before it, so a crash at any
  instant leaves the old acknowledged state or the new one, and ``check`` can finish or
  undo the retirement (#9, item 1). Chosen over an intent journal: the filesystem's
  atomic rename is already the journal, and readers need no replay.
* **Cost independent of the number of files.** An upload writes one blob and one small
  record and reads one record; nothing rewrites a list of every file (#9, item 11). A
  writer keeps recently read sessions' records in memory (:class:`_RecordCache`), so
  reading a session with many files does not reopen every record each time.
* **Atomic.** Every byte is written to a temporary file in ``.tmp/`` (same filesystem),
  fsynced, and renamed into place, and the directory is fsynced
  (:meth:`app.dataroot.DataRoot.commit_temp_file`). A new session directory appears
  complete, ``session.json`` included, by one rename. What a crash leaves behind is found
  and reconciled by :meth:`Store.check` (``app data check``, and every server start-up).
* **Ordered by creation.** Session ids are time-ordered (UUIDv7 as 32 hex digits), so the
  directory listing sorted by name is the creation order and ``GET /sessions`` reads only
  the sessions of the page it returns.
* **Confined.** Session ids must be 32 lower-case hex digits and file names are checked by
  :func:`check_file_name`; every path is also checked to lie inside its session directory.
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

import bisect
import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Final, Self

from app.dataroot import fsync_dir, write_new_file
from app.errors import (
    BadRequestError,
    FileExistsInSessionError,
    FileNotFoundInSessionError,
    InvalidNameError,
    SessionNotFoundError,
    TooManyFilesError,
    UploadTooLargeError,
)
from app.names import MAX_NAME_BYTES, check_file_name

if TYPE_CHECKING:
    from app.check import CheckReport
    from app.dataroot import DataRoot

__all__ = [
    "MAX_METADATA_BYTES",
    "MAX_NAME_BYTES",
    "MAX_TITLE_CHARS",
    "Page",
    "Store",
    "TrashEntry",
    "Upload",
    "check_file_name",
    "check_session_id",
    "new_session_id",
]

SESSION_FILE: Final = "session.json"
RECORDS_DIR: Final = "records"
BLOBS_DIR: Final = "blobs"
# Before issue 9: session.json listed every file, and the bytes were files/<name>.
LEGACY_FILES_KEY: Final = "files"
LEGACY_FILES_DIR: Final = "files"
TRASH_MANIFEST: Final = "trash.json"
TRASHED_SESSION: Final = "session"
NEW_PREFIX: Final = ".new-"

MAX_TITLE_CHARS: Final = 1000
"""Longest session title, in characters."""
MAX_METADATA_BYTES: Final = 64 * 1024
"""Largest session metadata, as compact JSON."""

_ID_RE: Final = re.compile(r"[0-9a-f]{32}")
_TRASH_TIME_FORMAT: Final = "%Y%m%dT%H%M%S%fZ"
_TRASH_NAME_RE: Final = re.compile(r"(\d{8}T\d{12}Z)-([0-9a-f]{32})(-file-[0-9a-f]+)?")
_LOCK_STRIPES: Final = 64
_RECORD_CACHE_LIMIT: Final = 200_000  # records (a few hundred bytes each) a writer keeps

log = logging.getLogger("app.store")


# --- ids and names --------------------------------------------------------------------------

_id_guard = threading.Lock()
_last_id: list[int] = [0, 0]  # [milliseconds, sequence] of the last id made in this process


def new_session_id() -> str:
    """A new session id: a UUIDv7 (RFC 9562) as 32 lower-case hex digits.

    The first 48 bits are the Unix time in milliseconds and the next 12 a counter within
    the millisecond, so ids made by one process sort in creation order, and ids made by
    different processes sort by their millisecond.

    Returns:
        The id, for example ``"0192b0f2c5a87b3e9c4d2a1f0e6b7c8d"``.
    """
    with _id_guard:
        ms = time.time_ns() // 1_000_000
        last_ms, seq = _last_id
        if ms <= last_ms:
            ms, seq = last_ms, seq + 1
            if seq > 0xFFF:  # 4096 ids in one millisecond: borrow the next one
                ms, seq = ms + 1, 0
        else:
            seq = secrets.randbelow(0x800)  # leave room to count up within the millisecond
        _last_id[:] = [ms, seq]
    rand_b = secrets.randbits(62)
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand_b
    return f"{value:032x}"


def check_session_id(value: str) -> str:
    """Check that ``value`` is a session id (32 lower-case hex digits).

    Args:
        value: an id from a URL or a command line.

    Returns:
        The id, unchanged.

    Raises:
        InvalidNameError: it is not one (400 over HTTP, exit 65 from a command).
    """
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise InvalidNameError("session id", str(value), "session ids are 32 lower-case hex digits")
    return value


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


# --- values returned -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Page:
    """One page of sessions, oldest first.

    Attributes:
        items: the sessions of this page, as in ``session.json``.
        total: how many sessions exist at this moment.
        next: the cursor of the next page (pass it as ``after``), ``None`` on the last page.
    """

    items: list[dict[str, Any]]
    total: int
    next: str | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (the body of ``GET /sessions``)."""
        return {"items": self.items, "total": self.total, "next": self.next}


@dataclass(frozen=True, slots=True)
class TrashEntry:
    """One entry of ``.trash/``: a deleted session, or a deleted or replaced file.

    Attributes:
        name: the entry's directory name in ``.trash/``.
        path: the entry's directory.
        kind: ``"session"`` or ``"file"``.
        session_id: the session it came from.
        file: the file name, for a file entry.
        deleted_at: when it was moved to the trash (UTC).
        reason: ``"delete"``, ``"purge"`` or ``"replace"``.
        title: the session's title when it was deleted (session entries).
    """

    name: str
    path: Path
    kind: str
    session_id: str
    file: str | None
    deleted_at: datetime
    reason: str
    title: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (``app sessions list --trash --json``)."""
        return {
            "name": self.name,
            "path": str(self.path),
            "kind": self.kind,
            "session_id": self.session_id,
            "file": self.file,
            "deleted_at": _iso(self.deleted_at),
            "reason": self.reason,
            "title": self.title,
        }


# --- uploads -------------------------------------------------------------------------------


class Upload:
    """A file being streamed into a session; create it with :meth:`Store.begin_upload`.

    The bytes go to a new temporary file in ``.tmp/`` as they arrive, are hashed on the
    way, and appear under their name only on :meth:`commit`. Nothing is ever visible
    half-written. Used as a context manager, an upload not committed by the end of the
    block is aborted.

    Examples:
        >>> with store.begin_upload(session_id, "notes.txt") as upload:
        ...     for chunk in chunks:
        ...         upload.write(chunk)
        ...     entry = upload.commit()
    """

    def __init__(self, store: Store, session_id: str, name: str, *, replace: bool) -> None:
        """Open the temporary file. Use :meth:`Store.begin_upload` rather than this."""
        self.store = store
        self.session_id = session_id
        self.name = name
        self.replace = replace
        self.limit = store.max_upload_bytes
        self.received = 0
        self.replaced = False
        """Whether the commit replaced an existing file (its old bytes went to the trash)."""
        self._hash = hashlib.sha256()
        self._file: IO[bytes] | None
        self._file, self.temp_path = store.root.new_temp_file()
        self._done = False

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        """Append ``chunk`` to the temporary file.

        Args:
            chunk: the next bytes of the file.

        Raises:
            UploadTooLargeError: the upload went over ``max_upload_bytes``; the temporary
                file is already removed.
            RuntimeError: the upload was committed or aborted.
        """
        if self._file is None:
            msg = f"upload of {self.name!r} is already finished"
            raise RuntimeError(msg)
        self.received += len(chunk)
        if self.received > self.limit:
            received = self.received
            self.abort()
            raise UploadTooLargeError(self.limit, received)
        self._hash.update(chunk)
        self._file.write(chunk)

    def write_all(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        """Append every chunk in order (one call for a batch; see :meth:`write`).

        Raises:
            UploadTooLargeError: the upload went over ``max_upload_bytes``.
        """
        for chunk in chunks:
            self.write(chunk)

    def commit(self) -> dict[str, Any]:
        """Make the file durable, rename it into the session and record it in session.json.

        Returns:
            The file's entry: ``name``, ``size``, ``sha256``, ``uploaded_at``.

        Raises:
            SessionNotFoundError: the session was deleted meanwhile (the upload is aborted).
            FileExistsInSessionError: the name exists and ``replace`` was not asked for.
            RuntimeError: the upload was already committed or aborted.
        """
        if self._file is None:
            msg = f"upload of {self.name!r} is already finished"
            raise RuntimeError(msg)
        try:
            # Flushed, not closed: the open file's flock marks it in flight until the
            # rename (another writer's clean-up of .tmp/ skips it); commit_temp_file fsyncs.
            self._file.flush()
            entry = {
                "name": self.name,
                "size": self.received,
                "sha256": self._hash.hexdigest(),
                "uploaded_at": _iso(_now()),
            }
            self.store._commit_upload(self, entry)
        except BaseException:
            self.abort()
            raise
        self._done = True
        with contextlib.suppress(OSError):
            self._file.close()
        self._file = None
        return entry

    def abort(self) -> None:
        """Forget the upload and remove its temporary file. Idempotent."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if not self._done:
            self._done = True
            with contextlib.suppress(FileNotFoundError):
                self.temp_path.unlink()

    @property
    def finished(self) -> bool:
        """Whether the upload was committed or aborted."""
        return self._done

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._done:
            self.abort()


# --- the store -----------------------------------------------------------------------------


class Store:
    """Sessions and their files on one open data root.

    Args:
        root: an open data root (:func:`app.dataroot.open_root`). Reading works on a
            read-only root; every change needs a writer.
    """

    def __init__(self, root: DataRoot) -> None:
        self.root = root
        self.max_upload_bytes: int = root.config.max_upload_bytes
        self.max_files: int = root.config.max_files_per_session
        # The locks, the group commit and the listing index belong to the open root, not
        # to this object: every Store on one root must serialise on the same session locks
        # and see the same index, or one Store's changes would be missing from another's
        # listing (and two could interleave changes to one session.json).
        self._shared = _shared_state(root)
        self._stripes = self._shared.stripes
        self._sessions_sync = self._shared.sessions_sync
        self._index_lock = self._shared.index_lock
        if root.writable:
            self._clear_unfinished_sessions()

    # -- paths ------------------------------------------------------------------------

    @property
    def sessions_dir(self) -> Path:
        """``<root>/sessions``."""
        return self.root.sessions_dir

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

    def _lock_for(self, session_id: str) -> threading.Lock:
        return self._stripes[int(session_id[-4:], 16) % _LOCK_STRIPES]

    def _clear_unfinished_sessions(self) -> None:
        # A `.new-<id>` directory is a create that crashed before its rename: it was never
        # acknowledged, and holds at most a session.json without files. One that another
        # Store on this root is creating right now is not a crash's.
        with self._shared.creating_lock:
            with os.scandir(self.sessions_dir) as entries:
                stale = [
                    e.path
                    for e in entries
                    if e.name.startswith(NEW_PREFIX) and e.name not in self._shared.creating
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
    ) -> dict[str, Any]:
        """Create a session, durably, and return it.

        Args:
            title: a human title, at most :data:`MAX_TITLE_CHARS` characters.
            metadata: any JSON object, at most :data:`MAX_METADATA_BYTES` as JSON.

        Returns:
            The session as stored in ``session.json``.

        Raises:
            BadRequestError: the title or metadata is too large or of the wrong type.
        """
        self.root.ensure_held()
        session = self._new_session_record(title, metadata)
        stored = {k: v for k, v in session.items() if k != "files"}  # files are records/
        data = (json.dumps(stored, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
        # The staging directory is the temporary file here: it is complete and synced before
        # one same-directory rename makes the session appear. Writing session.json inside it
        # directly (rather than through .tmp/) saves a cross-directory rename, which takes a
        # filesystem-wide lock, on the path every POST /sessions takes.
        staging = self.sessions_dir / f"{NEW_PREFIX}{session['id']}"
        with self._shared.creating_lock:
            self._shared.creating.add(staging.name)
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
            with self._shared.creating_lock:
                self._shared.creating.discard(staging.name)
        self._sessions_sync.sync()
        self._index_update(add=session["id"])
        return session

    def _new_session_record(self, title: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
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
        now = _iso(_now())
        return {
            "id": new_session_id(),
            "title": title,
            "metadata": metadata,
            "created_at": now,
            "updated_at": now,
            "files": [],
        }

    def get_session(self, session_id: str) -> dict[str, Any]:
        """The session with id ``session_id``, as stored.

        Raises:
            InvalidNameError: the id is malformed.
            SessionNotFoundError: there is no such session.
        """
        return self._read_session(self._session_dir(session_id), session_id)

    def _read_session(self, directory: Path, session_id: str) -> dict[str, Any]:
        session = self._read_meta(directory, session_id)
        if isinstance(session.get(LEGACY_FILES_KEY), list):
            return session  # not migrated yet (a writer's start-up check migrates it)
        records = self._read_records(directory)
        session["files"] = [_public(r) for r in records]
        # Uploads and deletes never rewrite session.json (#9, item 11): the session changed
        # last when its newest record did, or when a record was removed (the directory's
        # modification time says when).
        times = [session.get("updated_at") or "", *(r.get("uploaded_at") or "" for r in records)]
        with contextlib.suppress(OSError):
            mtime = (directory / RECORDS_DIR).lstat().st_mtime_ns
            times.append(_iso(datetime.fromtimestamp(mtime / 1e9, UTC)))
        session["updated_at"] = max(times)
        return dict(sorted(session.items()))  # the key order session.json always had

    def _migrate_legacy(self, directory: Path, session_id: str, meta: dict[str, Any]) -> None:
        # Each step can be repeated after a crash: the record is written first (naming the
        # blob the bytes will have), then the bytes are moved; session.json drops its list
        # last, which is the migration's commit. Until then readers use the list.
        legacy = directory / LEGACY_FILES_DIR
        blobs = self._ensure_dir(directory, BLOBS_DIR)
        self._ensure_dir(directory, RECORDS_DIR)
        for old in meta[LEGACY_FILES_KEY]:
            name = check_file_name(str(old.get("name")))
            record_path = directory / RECORDS_DIR / name
            record = _load_record(record_path)
            if record is None:
                record = {**_public(old), "name": name, "blob": new_session_id()}
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

    def _read_meta(self, directory: Path, session_id: str) -> dict[str, Any]:
        """session.json alone: whether the session exists, without reading its files."""
        if directory.is_symlink():
            # Not one of ours (a create renames a real directory): it could lead anywhere.
            raise SessionNotFoundError(session_id)
        try:
            raw = (directory / SESSION_FILE).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise SessionNotFoundError(session_id) from None
        session: dict[str, Any] = json.loads(raw)
        return session

    def _read_records(self, directory: Path) -> list[dict[str, Any]]:
        cache = self._shared.records if self.root.writable else None
        if cache is not None:
            cached, token = cache.get(directory.name)
            if cached is not None:
                cached.sort(key=lambda r: (str(r.get("uploaded_at") or ""), r["name"]))
                return cached
        records = self._scan_records(directory)
        if cache is not None:
            cache.store(directory.name, records, token)
        return records

    def _scan_records(self, directory: Path) -> list[dict[str, Any]]:
        records_dir = directory / RECORDS_DIR
        if records_dir.is_symlink():
            return []
        try:
            with os.scandir(records_dir) as entries:
                names = [e.name for e in entries if not e.name.startswith(".")]
        except (FileNotFoundError, NotADirectoryError):
            return []
        records = [r for name in names if (r := _load_record(records_dir / name)) is not None]
        records.sort(key=lambda r: (str(r.get("uploaded_at") or ""), r["name"]))
        return records

    def require_session(self, session_id: str) -> None:
        """Check that the session exists, reading its session.json only.

        Raises:
            InvalidNameError: the id is malformed.
            SessionNotFoundError: there is no such session.
        """
        self._read_meta(self._session_dir(session_id), session_id)

    def session_ids(self) -> list[str]:
        """Every session id, oldest first (a directory listing; no session.json is read)."""
        with self._index_lock:
            return list(self._ids())

    def _ids(self) -> list[str]:
        # Called with _index_lock held. The list returned must not be changed by the caller.
        if self._shared.index is not None:
            return self._shared.index
        ids = self._scan_ids()
        if self.root.writable:
            self._shared.index = ids
        return ids

    def _index_update(self, *, add: str | None = None, remove: str | None = None) -> None:
        with self._index_lock:
            index = self._shared.index
            if index is None:
                return  # not built yet: the next scan sees the change
            if add is not None:
                position = bisect.bisect_left(index, add)
                if position == len(index) or index[position] != add:
                    index.insert(position, add)
            if remove is not None:
                position = bisect.bisect_left(index, remove)
                if position < len(index) and index[position] == remove:
                    del index[position]

    def _scan_ids(self) -> list[str]:
        try:
            with os.scandir(self.sessions_dir) as entries:
                names = [e.name for e in entries if len(e.name) == 32 and _ID_RE.fullmatch(e.name)]
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

        Returns:
            The page, the total number of sessions and the next cursor.

        Raises:
            InvalidNameError: ``after`` is not a session id.
            BadRequestError: ``limit`` is below 1.
        """
        if limit < 1:
            raise BadRequestError(f"limit must be at least 1, not {limit}")
        cursor = None if after is None else check_session_id(after)
        with self._index_lock:
            ids = self._ids()
            start = 0 if cursor is None else bisect.bisect_right(ids, cursor)
            chosen = ids[start : start + limit]
            total = len(ids)
        items: list[dict[str, Any]] = []
        size = 0
        for session_id in chosen:
            try:
                session = self._read_session(self.sessions_dir / session_id, session_id)
            except SessionNotFoundError:
                continue  # deleted between the listing and this read: simply not shown
            if max_bytes is not None:
                # ASCII-escaped JSON is never shorter than the UTF-8 of the answer, and this is
                # json's C encoder: the bound holds, cheaply. 1,000 sessions of 62 KB metadata
                # made one 62 MB page (#9, item 10).
                size += len(json.dumps(session))
                if items and size > max_bytes:
                    return Page(items=items, total=total, next=items[-1]["id"])
            items.append(session)
        more = start + limit < total
        return Page(items=items, total=total, next=chosen[-1] if more and chosen else None)

    def delete_session(self, session_id: str, *, reason: str = "delete") -> TrashEntry:
        """Move a session, files and all, to ``.trash/``; audited.

        Args:
            session_id: the session.
            reason: recorded in the trash entry and the audit line.

        Returns:
            The trash entry it became (restore it with :meth:`restore`).

        Raises:
            InvalidNameError: the id is malformed.
            SessionNotFoundError: there is no such session.
            LockLostError: the data root's lock file was deleted or replaced.
        """
        self.root.ensure_held()
        entry = self._trash_session(session_id, reason)
        self._audit_after_commit(
            "trash-session", session_id, trash=entry.name, reason=reason, title=entry.title
        )
        return entry

    def _trash_session(self, session_id: str, reason: str) -> TrashEntry:
        directory = self._session_dir(session_id)
        with self._lock_for(session_id):
            session = self._read_session(directory, session_id)
            entry = self._new_trash_entry(
                session_id, "session", None, reason, title=session.get("title")
            )
            # The data lives in sessions/ or in .trash/, never in .tmp/ (which a restart
            # clears): the manifest is written first, then the directory moves in one rename.
            try:
                directory.rename(entry.path / TRASHED_SESSION)
                self._shared.records.changed(session_id)
                self._index_update(remove=session_id)
            except BaseException:
                self._remove_empty_entry(entry)
                raise
        fsync_dir(self.sessions_dir)
        fsync_dir(entry.path)
        return entry

    def purge(self) -> list[TrashEntry]:
        """Move every session to ``.trash/`` (``app data purge``); one audit line.

        Returns:
            The trash entries made, one per session.

        Raises:
            LockLostError: the data root's lock file was deleted or replaced.
        """
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

    def list_files(self, session_id: str) -> list[dict[str, Any]]:
        """The files of a session: ``name``, ``size``, ``sha256``, ``uploaded_at``.

        Raises:
            InvalidNameError: the id is malformed.
            SessionNotFoundError: there is no such session.
        """
        files: list[dict[str, Any]] = self.get_session(session_id)["files"]
        return files

    def file_path(self, session_id: str, name: str) -> tuple[Path, dict[str, Any]]:
        """Where a session's file's bytes are, and its entry (for tests and tools).

        Returns:
            The path of the file's current blob and its entry.

        Raises:
            InvalidNameError: the id or the name is malformed.
            SessionNotFoundError: there is no such session.
            FileNotFoundInSessionError: the session has no such file.
        """
        record_path = self._record_path(session_id, name)
        directory = self._session_dir(session_id)
        self._read_meta(directory, session_id)
        record = _load_record(record_path)
        if record is not None:
            blob = directory / BLOBS_DIR / record["blob"]
            if not blob.parent.is_symlink() and blob.is_file() and not blob.is_symlink():
                return blob, _public(record)
        raise FileNotFoundInSessionError(session_id, record_path.name)

    def open_file(self, session_id: str, name: str) -> tuple[BinaryIO, dict[str, Any]]:
        """Open a session's file for sending, with its entry; the caller closes the file.

        The record and its blob are read under the session's lock, so the entry describes
        exactly these bytes. A blob never changes once written, and a replace or a delete
        moves it aside rather than changing it, so a download that found the file sends it
        whole, and one that did not is :class:`FileNotFoundInSessionError`.

        Returns:
            The file, open for binary reading at offset 0, and its entry.

        Raises:
            InvalidNameError: the id or the name is malformed.
            SessionNotFoundError: there is no such session.
            FileNotFoundInSessionError: the session has no such regular file.
        """
        record_path = self._record_path(session_id, name)
        directory = self._session_dir(session_id)
        blobs = directory / BLOBS_DIR
        with self._lock_for(session_id):
            self._read_meta(directory, session_id)
            record = None if record_path.parent.is_symlink() else _load_record(record_path)
            if record is not None and not blobs.is_symlink():
                try:
                    file = open(blobs / record["blob"], "rb", opener=_open_regular)  # noqa: SIM115
                except OSError as error:
                    if error.errno not in _MISSING_ERRNOS:
                        raise
                else:
                    if stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                        return file, _public(record)
                    file.close()
        raise FileNotFoundInSessionError(session_id, record_path.name)

    def begin_upload(self, session_id: str, name: str, *, replace: bool = False) -> Upload:
        """Start streaming a file into a session.

        Everything that can be refused before the first byte is checked here: the lock, the
        id, the name, that the session exists, and (unless ``replace``) that the name is free.
        Reads session.json and one record only, however many files the session has.

        Args:
            session_id: the session.
            name: the file name (see :func:`check_file_name`).
            replace: allow replacing an existing file (its old content goes to the trash).

        Returns:
            An :class:`Upload`; write to it, then commit or abort it.

        Raises:
            InvalidNameError: the id or the name is malformed.
            SessionNotFoundError: there is no such session.
            FileExistsInSessionError: the name exists and ``replace`` is false.
            LockLostError: the data root's lock file was deleted or replaced.
        """
        record_path = self._record_path(session_id, name)
        self.root.ensure_held()
        self._read_meta(self._session_dir(session_id), session_id)
        if _load_record(record_path) is not None:
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
    ) -> dict[str, Any]:
        """Store a whole file at once (bytes, or an iterable of chunks).

        Returns:
            The file's entry.

        Raises:
            InvalidNameError: the id or the name is malformed.
            SessionNotFoundError: there is no such session.
            FileExistsInSessionError: the name exists and ``replace`` is false.
            UploadTooLargeError: the data is larger than ``max_upload_bytes``.
        """
        with self.begin_upload(session_id, name, replace=replace) as upload:
            for chunk in [data] if isinstance(data, bytes) else data:
                upload.write(chunk)
            return upload.commit()

    def _commit_upload(self, upload: Upload, entry: dict[str, Any]) -> None:
        session_id, name = upload.session_id, upload.name
        directory = self._session_dir(session_id)
        record_path = self._record_path(session_id, name)
        self.root.ensure_held()
        retired: TrashEntry | None = None
        with self._lock_for(session_id):
            self._read_meta(directory, session_id)  # deleted meanwhile: 404
            old = _load_record(record_path)
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
            try:
                if old is not None:
                    # Before the switch: a crash right after it leaves a manifest saying
                    # where the old bytes go, and `check` finishes the move.
                    retired = self._new_trash_entry(
                        session_id, "file", name, "replace", previous=_public(old), blob=old["blob"]
                    )
                # The commit point: one rename switches bytes and record together.
                self.root.atomic_write_json(record_path, {**entry, "blob": version})
            except BaseException:
                self._shared.records.changed(session_id)  # whatever happened, read it again
                if _record_blob(record_path) != version:  # not switched: undo, then refuse
                    with contextlib.suppress(OSError):
                        (blobs / version).unlink()
                    if retired is not None:
                        self._remove_empty_entry(retired)
                raise
            self._shared.records.changed(session_id, name, {**entry, "blob": version})
            if old is not None and retired is not None:
                self._retire_blob(directory, old["blob"], retired, name)
        if retired is not None:
            self._audit_after_commit("replace-file", f"{session_id}/{name}", trash=retired.name)

    def _ensure_dir(self, directory: Path, name: str) -> Path:
        path = directory / name
        if not path.is_dir():
            with contextlib.suppress(FileExistsError):
                path.mkdir(mode=0o700)
            fsync_dir(directory)
        return path

    def _retire_blob(self, directory: Path, blob: str, entry: TrashEntry, name: str) -> None:
        # After the switch the old blob is no longer the file; moving it into its trash entry
        # may fail (a full disk) without undoing anything: `check` finishes the move.
        try:
            (directory / BLOBS_DIR / blob).rename(entry.path / name)
            fsync_dir(entry.path)
            fsync_dir(directory / BLOBS_DIR)
        except OSError as error:
            log.warning("could not move blob %s to the trash yet (%s); `check` will", blob, error)

    def _audit_after_commit(self, operation: str, target: str, **details: Any) -> None:
        # The change is made and must be acknowledged as made; a missing line is found and
        # written by `check` (a trash entry without its audit line).
        try:
            self.root.audit(operation, target, **details)
        except OSError as error:
            log.warning("could not write the audit line of %s %s (%s)", operation, target, error)

    def delete_file(self, session_id: str, name: str) -> TrashEntry:
        """Move one file of a session to ``.trash/``; audited.

        Returns:
            The trash entry it became.

        Raises:
            InvalidNameError: the id or the name is malformed.
            SessionNotFoundError: there is no such session.
            FileNotFoundInSessionError: the session has no such file.
            LockLostError: the data root's lock file was deleted or replaced.
        """
        self.root.ensure_held()
        record_path = self._record_path(session_id, name)
        name = record_path.name
        directory = self._session_dir(session_id)
        with self._lock_for(session_id):
            self._read_meta(directory, session_id)
            old = _load_record(record_path)
            if old is None or not (directory / BLOBS_DIR / old["blob"]).is_file():
                raise FileNotFoundInSessionError(session_id, name)
            entry = self._new_trash_entry(
                session_id, "file", name, "delete", previous=_public(old), blob=old["blob"]
            )
            try:
                self.root.ensure_held()
                record_path.unlink()  # the commit point; needs no free space
            except BaseException:
                self._remove_empty_entry(entry)
                raise
            self._shared.records.changed(session_id, name, None)
            fsync_dir(record_path.parent)
            self._retire_blob(directory, old["blob"], entry, name)
        self._audit_after_commit("trash-file", f"{session_id}/{name}", trash=entry.name)
        return entry

    # -- trash ------------------------------------------------------------------------

    def _new_trash_entry(
        self,
        session_id: str,
        kind: str,
        file: str | None,
        reason: str,
        *,
        title: str | None = None,
        previous: dict[str, Any] | None = None,
        blob: str | None = None,
    ) -> TrashEntry:
        moment = _now()
        stamp = moment.strftime(_TRASH_TIME_FORMAT)
        # File names can be 255 bytes on their own, so a file entry is named by a random
        # suffix; the file keeps its name inside the entry, and trash.json says what it was.
        suffix = f"-file-{secrets.token_hex(4)}" if kind == "file" else ""
        name = f"{stamp}-{session_id}{suffix}"
        path = self.root.trash_dir / name
        manifest = {
            "kind": kind,
            "session_id": session_id,
            "file": file,
            "deleted_at": _iso(moment),
            "reason": reason,
            "title": title,
            "entry": previous,
        }
        if blob is not None:
            manifest["blob"] = blob  # which blob moves in (see `check` for a crash before)
        path.mkdir(mode=0o700)
        try:
            self.root.atomic_write_json(path / TRASH_MANIFEST, manifest)
            fsync_dir(self.root.trash_dir)
        except BaseException:
            # A full disk must not leave an empty entry behind (#9, item 4).
            with contextlib.suppress(OSError):
                (path / TRASH_MANIFEST).unlink(missing_ok=True)
                path.rmdir()
            raise
        return TrashEntry(name, path, kind, session_id, file, moment, reason, title)

    def list_trash(self) -> list[TrashEntry]:
        """Every entry of ``.trash/``, oldest first.

        Entries whose manifest is missing or unreadable (a crash while trashing) are
        listed with what their name tells.
        """
        out = []
        try:
            with os.scandir(self.root.trash_dir) as entries:
                names = sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []
        for name in names:
            entry = self._read_trash_entry(name)
            if entry is not None:
                out.append(entry)
        return out

    def _read_trash_entry(self, name: str) -> TrashEntry | None:
        found = _TRASH_NAME_RE.fullmatch(name)
        if found is None:
            return None
        path = self.root.trash_dir / name
        deleted_at = datetime.strptime(found.group(1), _TRASH_TIME_FORMAT).replace(tzinfo=UTC)
        kind = "file" if found.group(3) else "session"
        try:
            manifest = json.loads((path / TRASH_MANIFEST).read_bytes())
        except (OSError, ValueError):
            manifest = {}
        return TrashEntry(
            name=name,
            path=path,
            kind=kind,
            session_id=found.group(2),
            file=manifest.get("file"),
            deleted_at=deleted_at,
            reason=manifest.get("reason", "unknown"),
            title=manifest.get("title"),
        )

    def restore(self, session_id: str, *, file: str | None = None) -> dict[str, Any]:
        """Bring a session (or one of its files) back from ``.trash/``; audited.

        The most recently deleted matching entry is restored.

        Args:
            session_id: the session.
            file: a file name to restore into the (existing) session; ``None`` restores the
                whole session.

        Returns:
            The session as it is after the restore.

        Raises:
            InvalidNameError: the id or the name is malformed.
            SessionNotFoundError: nothing to restore (or, for a file, the session itself
                is not there: restore the session first).
            BadRequestError: the session or file exists again; restoring would overwrite it.
            LockLostError: the data root's lock file was deleted or replaced.
        """
        self.root.ensure_held()
        check_session_id(session_id)
        name = None if file is None else check_file_name(file)
        candidates = [
            e
            for e in self.list_trash()
            if e.session_id == session_id
            and (e.kind == "session" if name is None else (e.kind == "file" and e.file == name))
        ]
        source = (
            [e for e in candidates if (e.path / TRASHED_SESSION).is_dir()]
            if name is None
            else [e for e in candidates if (e.path / name).is_file()]
        )
        if not source:
            what = session_id if name is None else f"{session_id}/{name}"
            raise SessionNotFoundError(what, where="the trash")
        entry = source[-1]
        if name is None:
            session = self._restore_session(entry)
            self.root.audit("restore-session", session_id, trash=entry.name)
        else:
            session = self._restore_file(entry, name)
            self.root.audit("restore-file", f"{session_id}/{name}", trash=entry.name)
        return session

    def _restore_session(self, entry: TrashEntry) -> dict[str, Any]:
        dest = self.sessions_dir / entry.session_id
        with self._lock_for(entry.session_id):
            if dest.exists():
                raise BadRequestError(
                    f"session {entry.session_id!r} exists again; refusing to overwrite it with "
                    f"the copy in {entry.path}. Delete the current one first if you mean it"
                )
            (entry.path / TRASHED_SESSION).rename(dest)
            self._shared.records.changed(entry.session_id)
            self._index_update(add=entry.session_id)
            fsync_dir(self.sessions_dir)
            self._remove_empty_entry(entry)
            return self._read_session(dest, entry.session_id)

    def _restore_file(self, entry: TrashEntry, name: str) -> dict[str, Any]:
        session_id = entry.session_id
        directory = self._session_dir(session_id)
        record_path = self._record_path(session_id, name)
        with self._lock_for(session_id):
            try:
                self._read_meta(directory, session_id)
            except SessionNotFoundError:
                raise SessionNotFoundError(session_id) from None
            if _load_record(record_path) is not None:
                raise BadRequestError(
                    f"session {session_id!r} has a file {name!r} again; refusing to overwrite "
                    f"it with the copy in {entry.path}. Delete the current one first"
                )
            manifest = json.loads((entry.path / TRASH_MANIFEST).read_bytes())
            previous = manifest.get("entry") or {}
            blobs = self._ensure_dir(directory, BLOBS_DIR)
            self._ensure_dir(directory, RECORDS_DIR)
            # Back under the blob name the manifest gives: a crash before the record is
            # written leaves exactly what `check` moves back into this entry.
            blob = manifest.get("blob")
            if not (isinstance(blob, str) and _ID_RE.fullmatch(blob)) or (blobs / blob).exists():
                blob = new_session_id()
            size = (entry.path / name).stat().st_size
            (entry.path / name).rename(blobs / blob)
            fsync_dir(blobs)
            fsync_dir(entry.path)
            record = {
                "name": name,
                "size": size,
                "sha256": previous.get("sha256"),
                "uploaded_at": previous.get("uploaded_at"),
                "blob": blob,
            }
            try:
                self.root.atomic_write_json(record_path, record)
            except BaseException:
                self._shared.records.changed(session_id)
                if _record_blob(record_path) != blob:
                    with contextlib.suppress(OSError):
                        (blobs / blob).rename(entry.path / name)
                raise
            self._shared.records.changed(session_id, name, record)
            self._remove_empty_entry(entry)
            return self._read_session(directory, session_id)

    def _remove_empty_entry(self, entry: TrashEntry) -> None:
        # Only the manifest is left; a directory with anything else in it stays.
        with contextlib.suppress(FileNotFoundError):
            (entry.path / TRASH_MANIFEST).unlink()
        with contextlib.suppress(OSError):
            entry.path.rmdir()
        fsync_dir(self.root.trash_dir)

    def empty_trash(
        self, older_than: timedelta | None = None, *, via: str = "command"
    ) -> list[TrashEntry]:
        """Remove trash entries for good: the only operation that deletes bytes; audited.

        Args:
            older_than: only entries deleted longer ago than this; ``None`` for all.
            via: how it was asked for (``"command"``, ``"http"``), for the audit line.

        Returns:
            The entries removed.

        Raises:
            LockLostError: the data root's lock file was deleted or replaced.
        """
        self.root.ensure_held()
        cutoff = None if older_than is None else _now() - older_than
        removed = []
        trash = self.root.trash_dir
        for entry in self.list_trash():
            if cutoff is not None and entry.deleted_at > cutoff:
                continue
            if entry.path.parent != trash or entry.path.is_symlink():
                continue  # never follow anything out of the trash
            shutil.rmtree(entry.path)
            removed.append(entry)
        if removed:
            fsync_dir(trash)
        self.root.audit(
            "empty-trash",
            trash,
            count=len(removed),
            entries=[e.name for e in removed],
            older_than=None if older_than is None else older_than.total_seconds(),
            via=via,
        )
        return removed

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

        Returns:
            The findings.

        Raises:
            LockLostError: with ``repair``, the data root's lock file was deleted or replaced.
        """
        from app.check import Checker, CheckReport

        if repair:
            self.root.ensure_held()
        checker = Checker(self, repair, thorough)
        try:
            checker.run()
        finally:
            if repair:
                self._shared.records.clear()  # repairs change records behind the cache
        if repair and checker.findings:
            self.root.audit(
                "check-repair",
                self.root.path,
                findings=[f.to_dict() for f in checker.findings],
            )
        return CheckReport(checker.findings, repair)

    def iter_all(self) -> Iterator[dict[str, Any]]:
        """Every session, oldest first (reads every session.json; for commands, not HTTP)."""
        for session_id in self.session_ids():
            with contextlib.suppress(SessionNotFoundError):
                yield self._read_session(self.sessions_dir / session_id, session_id)


class _RecordCache:
    """A writer's copy of each recently read session's records, so reads stay O(1) too.

    Only the holder of the root writes, and every write updates (or drops) its session here
    under a generation count: a reader that scanned a session while a write happened does
    not store its possibly stale scan. Bounded by the number of records held (LRU).
    """

    def __init__(self, limit: int = _RECORD_CACHE_LIMIT) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, dict[str, dict[str, Any]]] = OrderedDict()
        self._generations: dict[str, int] = {}
        self._epoch = 0
        self._held = 0

    def get(self, session_id: str) -> tuple[list[dict[str, Any]] | None, tuple[int, int]]:
        with self._lock:
            token = (self._epoch, self._generations.get(session_id, 0))
            records = self._sessions.get(session_id)
            if records is None:
                return None, token
            self._sessions.move_to_end(session_id)
            return list(records.values()), token

    def store(self, session_id: str, records: list[dict[str, Any]], token: tuple[int, int]) -> None:
        with self._lock:
            if token != (self._epoch, self._generations.get(session_id, 0)):
                return  # a write happened during the scan
            if len(records) > self.limit:
                return
            self._forget(session_id)
            self._sessions[session_id] = {r["name"]: r for r in records}
            self._held += len(records)
            while self._held > self.limit:
                _, evicted = self._sessions.popitem(last=False)
                self._held -= len(evicted)

    def changed(self, session_id: str, name: str | None = None, record: Any = None) -> None:
        """A write changed ``name`` (now ``record``, ``None`` if gone); no name: drop all."""
        with self._lock:
            self._generations[session_id] = self._generations.get(session_id, 0) + 1
            records = self._sessions.get(session_id)
            if records is None:
                return
            if name is None:
                self._forget(session_id)
            elif record is None:
                self._held -= records.pop(name, None) is not None
            else:
                self._held += name not in records
                records[name] = record

    def clear(self) -> None:
        with self._lock:
            self._epoch += 1
            self._sessions.clear()
            self._held = 0

    def _forget(self, session_id: str) -> None:
        records = self._sessions.pop(session_id, None)
        if records is not None:
            self._held -= len(records)


class _RootState:
    """What every `Store` on one open data root shares (see `Store.__init__`)."""

    def __init__(self, sessions_dir: Path) -> None:
        self.stripes = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self.sessions_sync = _GroupSync(sessions_dir)
        # The sorted ids, kept for a writer only: while this process holds the root's lock
        # nobody else adds or removes sessions, so after one directory scan every change
        # goes through a Store on this root. A reader (no lock) scans on every call instead.
        self.index: list[str] | None = None
        self.index_lock = threading.Lock()
        self.records = _RecordCache()
        # The `.new-<id>` staging directories of creates in progress.
        self.creating: set[str] = set()
        self.creating_lock = threading.Lock()


_ROOT_STATES: weakref.WeakKeyDictionary[DataRoot, _RootState] = weakref.WeakKeyDictionary()
_ROOT_STATES_LOCK: Final = threading.Lock()


def _shared_state(root: DataRoot) -> _RootState:
    with _ROOT_STATES_LOCK:
        state = _ROOT_STATES.get(root)
        if state is None:
            state = _ROOT_STATES[root] = _RootState(root.sessions_dir)
        return state


class _GroupSync:
    """Group commit for one directory: concurrent callers share one ``fsync``.

    A caller's change (a rename into the directory) is made before it calls :meth:`sync`;
    it returns once an fsync that *started* after the call has completed. While one fsync
    runs, later callers queue and the next fsync covers all of them, so N concurrent
    creates cost about two directory syncs instead of N.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._requested = 0
        self._completed = 0
        self._running = False

    def sync(self) -> None:
        with self._cond:
            self._requested += 1
            ticket = self._requested
            while self._completed < ticket and self._running:
                self._cond.wait()
            if self._completed >= ticket:
                return
            self._running = True
            covers = self._requested
        try:
            fsync_dir(self.path)
        except BaseException:
            with self._cond:
                self._running = False
                self._cond.notify_all()
            raise
        with self._cond:
            self._running = False
            self._completed = max(self._completed, covers)
            self._cond.notify_all()


def _open_regular(path: str, flags: int) -> int:
    # O_NOFOLLOW: a symlink planted at a file's name is not the session's file.
    # O_NONBLOCK: nor is a FIFO, which must not hang the open (the caller checks S_ISREG).
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)


_MISSING_ERRNOS: Final = frozenset({errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.ENXIO})
_MAX_RECORD_BYTES: Final = 64 * 1024


def _public(record: dict[str, Any]) -> dict[str, Any]:
    """A file's entry as the API shows it: the record without its blob name."""
    return {k: record.get(k) for k in ("name", "size", "sha256", "uploaded_at")}


def _load_record(path: Path) -> dict[str, Any] | None:
    """The record at ``path``, or ``None`` if there is none (or it is not a record of ours)."""
    try:
        fd = _open_regular(str(path), os.O_RDONLY)
    except OSError as error:
        if error.errno in _MISSING_ERRNOS:
            return None
        raise
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        raw = file.read(_MAX_RECORD_BYTES + 1)
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if (
        not isinstance(record, dict)
        or record.get("name") != path.name
        or not isinstance(record.get("blob"), str)
        or not _ID_RE.fullmatch(record["blob"])
    ):
        return None
    return record


def _record_blob(path: Path) -> str | None:
    """The blob a record names now (after a failed write: did the switch happen?)."""
    try:
        record = _load_record(path)
    except OSError:
        return None
    return None if record is None else str(record["blob"])
