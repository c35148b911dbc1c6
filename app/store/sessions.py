"""The sessions of a data root: create, read, page through, move to the trash and back.

A session is ``sessions/<id>/session.json`` (id, title, metadata, times) plus its files'
records; reading one never rewrites it. Ids are time-ordered, so the directory listing
sorted by name is the creation order and a page reads only its own sessions.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from app.dataroot import fsync_dir, json_bytes, write_new_file
from app.errors import (
    BadRequestError,
    SessionNotFoundError,
    StoreError,
    UnreadableSessionError,
)
from app.names import check_file_name
from app.storage import (
    Page,
    SessionRecord,
    TrashEntry,
    checked_session_fields,
    json_body,
    page_body,
)
from app.store.concurrency import records_identity
from app.store.ids import ID_RE, check_session_id, new_session_id
from app.store.records import (
    BLOBS_DIR,
    LEGACY_FILES_DIR,
    LEGACY_FILES_KEY,
    NEW_PREFIX,
    RECORDS_DIR,
    SESSION_FILE,
    TRASHED_SESSION,
    FileRecord,
    MetaCache,
    ValidatedCache,
    ensure_dir,
    load_record,
    public,
    read_meta,
    refuse_linked_dirs,
    scan_records,
    upload_order,
)

if TYPE_CHECKING:
    from app.dataroot import DataRoot, Prepared
    from app.store.trash import Trash
    from app.store.watch import SessionWatch

__all__ = ["Sessions"]

_BODY_CACHE_BYTES: Final = 64 * 1024 * 1024
_UNSETTLED_BYTES: Final = 8 * 1024 * 1024
_GIL_YIELD_EVERY: Final = 100  # sessions of a page between two hand-overs of the GIL

T = TypeVar("T")


class Sessions:
    """The sessions of one open data root (``<root>/sessions/``)."""

    def __init__(self, root: DataRoot, trash: Trash) -> None:
        self.root = root
        self.state = root.store_state
        self.trash = trash
        self.path = root.sessions_dir
        self.where = os.fspath(self.path)  # string paths on the read paths: see _read
        self.meta = MetaCache()
        # Each session as the server answers it (see _encoded), with its _page_size_bound.
        self.bodies: ValidatedCache[tuple[bytes, int]] = ValidatedCache(_BODY_CACHE_BYTES)
        # The kernel's word on which kept answers may have changed (`Store.watch_sessions`,
        # the server's only): None, and each kept answer is checked with its stat calls.
        self.watch: SessionWatch | None = None
        # Answers of sessions changed in the last two seconds, which `bodies` does not keep
        # (the stat key cannot tell two writes in one clock tick apart): used only while the
        # watch says nothing changed since (an event, not a stat, tells it), at most a second.
        self.unsettled: ValidatedCache[tuple[bytes, int]] = ValidatedCache(_UNSETTLED_BYTES)

    def directory(self, session_id: str) -> Path:
        """The directory of ``session_id``, once the id is checked."""
        return self.path / check_session_id(session_id)

    @contextlib.contextmanager
    def locked(self, session_id: str) -> Iterator[Path]:
        """Hold the session's lock, with the session there (else SessionNotFoundError).

        Every change to a session happens inside this block, so changes to one session
        never interleave; the session's directory is what it yields.
        """
        directory = self.directory(session_id)
        with self.state.lock_for(session_id):
            read_meta(directory, session_id)
            yield directory

    def clear_unfinished(self) -> None:
        """Remove the staging directories of creates that crashed (audited)."""
        # A `.new-<id>` directory is a create that crashed before its rename: it was never
        # acknowledged, and holds at most a session.json without files. One that another
        # Store on this root is creating right now is not a crash's.
        with self.state.creating_lock:
            with os.scandir(self.path) as entries:
                stale = [
                    e.path
                    for e in entries
                    if e.name.startswith(NEW_PREFIX) and e.name not in self.state.creating
                ]
            for path in stale:
                shutil.rmtree(path, ignore_errors=True)
        if stale:
            self.root.audit(
                "clear-unfinished-create", self.path, removed=sorted(Path(p).name for p in stale)
            )

    def create(self, title: str, metadata: dict[str, Any] | None) -> SessionRecord:
        self.root.ensure_held()
        metadata = checked_session_fields(title, metadata)
        # The id is made and registered as in creation in one step, and stays registered
        # until the session is in the index: listings show no id above one still in creation
        # (`_page`), so a client that pages or polls with the last id it saw never misses a
        # session that appears later with a smaller id (creates finish in any order).
        with self.state.creating_lock:
            session = _new_session(title, metadata)
            staging = self.path / f"{NEW_PREFIX}{session['id']}"
            self.state.creating.add(staging.name)
        stored = {k: v for k, v in session.items() if k != "files"}  # files are records/
        data = json_bytes(stored)
        # The staging directory is the temporary file here: it is complete and synced before
        # one same-directory rename makes the session appear. Writing session.json inside it
        # directly (rather than through .tmp/) saves a cross-directory rename, which takes a
        # filesystem-wide lock, on the path every POST /sessions takes.
        try:
            with self.root.prepare(self.path) as prepared:
                try:
                    staging.mkdir(mode=0o700)
                    write_new_file(staging / SESSION_FILE, data)
                    fsync_dir(staging)
                    self.root.ensure_held()  # the last moment before the session appears
                    staging.rename(self.path / session["id"])
                except BaseException:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise
                try:
                    self.state.sessions_sync.sync(prepared.fd(self.path))
                finally:
                    # Listed as the disk has it, even if the sync failed (EIO): a process
                    # that starts now lists it too.
                    self.state.index_update(add=session["id"])
        finally:
            with self.state.creating_lock:
                self.state.creating.discard(staging.name)
        return session

    def get(self, session_id: str) -> SessionRecord:
        return self.read(self.directory(session_id), session_id)

    def get_json(self, session_id: str) -> bytes:
        """:meth:`get`'s session as :func:`app.storage.json_body` encodes it."""
        directory = f"{self.where}/{check_session_id(session_id)}"
        return self._checked_reader()(directory, session_id)[0]

    def require(self, session_id: str) -> None:
        read_meta(self.directory(session_id), session_id)

    def read(self, directory: Path, session_id: str) -> SessionRecord:
        """The session in ``directory``, with its files, as the API shows it."""
        return self._read(os.fspath(directory), session_id)

    def _read(self, directory: str, session_id: str) -> SessionRecord:
        # String paths, not pathlib: a page of 100 sessions built 300 Path objects, a third
        # of its cost.
        session = self.meta.read(directory, session_id)
        if isinstance(session.get(LEGACY_FILES_KEY), list):
            return cast(SessionRecord, session)  # not migrated yet (a writer's check does)
        records = self._records(directory, session_id)
        # A delete moves the whole directory in one rename: one that came between session.json
        # and records/ made the records read as none, and the session was answered (listed,
        # or GET) with no files, a state it never had (red team 30). session.json still there
        # after the records means they were read in place; gone, the session is too.
        self.meta.stat(directory, session_id)
        session["files"] = [public(r) for r in records]
        # Uploads and deletes never rewrite session.json: the session changed last when its
        # newest record did, or when a record was removed (the directory's mtime says when).
        times = [session.get("updated_at") or "", *(r.get("uploaded_at") or "" for r in records)]
        with contextlib.suppress(OSError):
            mtime = os.lstat(f"{directory}/{RECORDS_DIR}").st_mtime_ns
            times.append(_iso(datetime.fromtimestamp(mtime / 1e9, UTC)))
        session["updated_at"] = max(times)
        return cast(SessionRecord, dict(sorted(session.items())))  # session.json's key order

    def _checked_reader(self) -> Callable[[str, str], tuple[bytes, int]]:
        """:meth:`_encoded`, once the watch (if any) has taken the events queued so far."""
        if self.watch is not None:
            self.watch.drain()
        return self._encoded

    def _encoded(self, directory: str, session_id: str) -> tuple[bytes, int]:
        """The session's :func:`json_body` and its ``_page_size_bound``, kept while fresh.

        Kept under everything the answer is made of: session.json's stat key (as the
        MetaCache keeps that file, and only once it has settled), the record cache's token
        (every write of records through this root changes it), and the identity (with its
        ctime, `records_identity`) and mtime of records/ (another directory put in its place
        by hand, a record added or removed there by hand; the answer's `updated_at`).
        Each is taken before the session is read, so what is kept is never older than its
        validator says; a change after that only makes the next validator differ.

        With a watch (`app.store.watch`, drained by :meth:`_checked_reader` before this is
        called), an answer checked since the last event for its session, less than a second
        ago, and whose record token is unchanged is answered without the three stat calls;
        one changed in the last two seconds is kept too, for as long as that holds.
        """
        cache = self.state.records if self.root.writable else None
        if cache is None:  # a reader scans records/ on every read: nothing tells a change
            return _encode(self._read(directory, session_id))
        watch = self.watch
        count = None
        if watch is not None:
            trusted = watch.clean(directory)
            if trusted is not None and trusted[1] == cache.token(session_id):  # type: ignore[index]
                encoded = self.bodies.get(directory, trusted) or self.unsettled.get(
                    directory, trusted
                )
                if encoded is not None:
                    return encoded
            count = watch.begin(directory)  # watched before the validator is taken
        key = self.meta.stat(directory, session_id)
        validator = (key, cache.token(session_id), _dir_key(f"{directory}/{RECORDS_DIR}"))
        encoded = self.bodies.get(directory, validator)
        if encoded is None:
            encoded = _encode(self._read(directory, session_id))
            if self.meta.settled(key):
                self.bodies.put(directory, validator, encoded, len(encoded[0]))
            elif count is not None:  # kept on the watch's word alone (see `unsettled`)
                self.unsettled.put(directory, validator, encoded, len(encoded[0]))
            else:
                return encoded
        if count is not None and watch is not None:
            watch.checked(directory, count, validator)
        return encoded

    def _records(self, directory: str, session_id: str) -> list[FileRecord]:
        cache = self.state.records if self.root.writable else None
        if cache is not None:
            identity = records_identity(f"{directory}/{RECORDS_DIR}")
            cached, token = cache.get(session_id, identity)
            if cached is not None:
                cached.sort(key=upload_order)
                return cached
        records = scan_records(Path(directory))
        if cache is not None:
            cache.store(session_id, records, token, identity)
        return records

    def migrate_legacy(self, directory: Path, meta: dict[str, Any]) -> None:
        """Give each file of a session written before records/ and blobs/ its record and blob."""
        # Each step can be repeated after a crash: the record is written first (naming the
        # blob the bytes will have), then the bytes are moved; session.json drops its list
        # last, which is the migration's commit. Until then readers use the list.
        refuse_linked_dirs(self.root.path, directory, (LEGACY_FILES_DIR, RECORDS_DIR, BLOBS_DIR))
        legacy = directory / LEGACY_FILES_DIR
        blobs = ensure_dir(directory, BLOBS_DIR)
        ensure_dir(directory, RECORDS_DIR)
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

    def ids(self) -> list[str]:
        """Every session id, oldest first (the writer's index, or a directory listing)."""
        return self.state.ids(self.scan_ids, keep=self.root.writable)

    def scan_ids(self) -> list[str]:
        """Every session id, oldest first, from the directory itself (never the index)."""
        try:
            with os.scandir(self.path) as entries:
                names = [e.name for e in entries if len(e.name) == 32 and ID_RE.fullmatch(e.name)]
        except FileNotFoundError:  # a reader on a root that was never opened as a writer
            return []
        names.sort()
        return names

    def page(self, limit: int, after: str | None, max_bytes: int | None) -> Page:
        def read(directory: str, session_id: str) -> tuple[SessionRecord, int]:
            session = self._read(directory, session_id)
            return session, 0 if max_bytes is None else _page_size_bound(session)

        items, total, cursor = self._page(limit, after, max_bytes, read)
        return Page(items=[session for _, session in items], total=total, next=cursor)

    def page_json(self, limit: int, after: str | None, max_bytes: int | None) -> bytes:
        """:meth:`page` as :func:`app.storage.json_body` encodes it, joined from kept bytes."""
        items, total, cursor = self._page(limit, after, max_bytes, self._checked_reader())
        return page_body([body for _, body in items], total, cursor)

    def _page(
        self,
        limit: int,
        after: str | None,
        max_bytes: int | None,
        read: Callable[[str, str], tuple[T, int]],
    ) -> tuple[list[tuple[str, T]], int, str | None]:
        """A page's sessions as ``read`` gives them (with their bound), its total and cursor."""
        if limit < 1:
            raise BadRequestError(f"limit must be at least 1, not {limit}")
        cursor = None if after is None else check_session_id(after)
        # Read before the ids: a create that is not in creation now either is in the index
        # already or will get an id above every id this page can show.
        frontier = self.state.creation_frontier(len(NEW_PREFIX))
        chosen, start, total = self.state.window(
            self.scan_ids, keep=self.root.writable, after=cursor, limit=limit
        )
        if frontier is not None and chosen and chosen[-1] >= frontier:
            # What sorts after a session still in creation waits for it: shown now, it would
            # let a cursor pass the one in creation, which then appears behind it.
            chosen = chosen[: bisect.bisect_left(chosen, frontier)]
            total = start + len(chosen)
        items: list[tuple[str, T]] = []
        size = 0
        for n, session_id in enumerate(chosen, 1):
            if limit > _GIL_YIELD_EVERY and n % _GIL_YIELD_EVERY == 0:
                # A large page is read on a worker thread, and kept sessions answered on the
                # watch's word make no system call: without one, the thread kept the
                # interpreter lock for whole switch intervals while the event loop waited
                # (GET /health 6.6 to 11.7 ms at p99 during pages of 1,000, bench/README.md).
                time.sleep(0)
            try:
                item, bound = read(f"{self.where}/{session_id}", session_id)
            except SessionNotFoundError:
                continue  # deleted between the listing and this read: simply not shown
            except UnreadableSessionError:
                # One damaged session.json must not fail every page that holds it, for
                # every client; reading that session says so, and `check` reports it.
                continue
            if max_bytes is not None:
                size += bound
                if items and size > max_bytes:
                    return items, total, items[-1][0]
            items.append((session_id, item))
        more = start + limit < total
        return items, total, chosen[-1] if more and chosen else None

    def iter_all(self) -> Iterator[SessionRecord]:
        for session_id in self.ids():
            with contextlib.suppress(SessionNotFoundError, UnreadableSessionError):
                yield self.read(self.path / session_id, session_id)

    def move_to_trash(self, session_id: str, reason: str) -> TrashEntry:
        """Move a session, files and all, into a new trash entry (not audited here)."""
        directory = self.directory(session_id)
        with self.state.lock_for(session_id):
            # session.json alone: the title is all the entry needs, and the whole session
            # (its records listed and sorted, its times) was read for nothing on each delete.
            try:
                title = self.meta.read(os.fspath(directory), session_id).get("title")
            except (UnreadableSessionError, PermissionError):
                # Damaged from outside the app (or made unreadable to it: mode 000, another
                # user's): it moves as it is, so that a client can clear it from the listing
                # (and a purge is whole) while its bytes stay for a human.
                title = None
            entry = self.trash.new_entry(session_id, "session", None, reason, title=title)
            # The data lives in sessions/ or in .trash/, never in .tmp/ (which a restart
            # clears): the manifest is written first, then the directory moves in one rename.
            try:
                prepared = self.root.prepare(self.path, entry.path)
            except BaseException:
                self.trash.remove_empty(entry)
                raise
            try:
                directory.rename(entry.path / TRASHED_SESSION)
            except BaseException:
                prepared.close()
                self.trash.remove_empty(entry)
                raise
            self.state.records.changed(session_id)
            self.state.index_update(remove=session_id)
        with prepared:
            # The rename out of sessions/ is durable once an fsync of sessions/ that began
            # after it completes: concurrent deletes and creates share it (group commit).
            self.state.sessions_sync.sync(prepared.fd(self.path))
            prepared.sync(entry.path)
        return entry

    def restore(
        self, entry: TrashEntry, prepared: Prepared
    ) -> tuple[SessionRecord | None, StoreError | None]:
        """Move a trashed session back; refused if a session with its id exists again.

        Returns the session as it now reads, or, for one damaged from outside the app, the
        error reading it gives (it moves back all the same, to be cleared or mended).
        """
        dest = self.path / entry.session_id
        source = entry.path / TRASHED_SESSION
        with self.state.lock_for(entry.session_id):
            if dest.exists():
                raise BadRequestError(
                    f"session {entry.session_id!r} exists again; refusing to overwrite it with "
                    f"the copy in {entry.path}. Delete the current one first if you mean it"
                )
            # The answer is read before the move (the directory moves whole, its times
            # too): read after it, a failure (EMFILE) would report a restore that happened
            # as one that did not.
            session: SessionRecord | None = None
            unreadable: StoreError | None = None
            try:
                session = self._read(os.fspath(source), entry.session_id)
            except (SessionNotFoundError, UnreadableSessionError) as error:
                unreadable = error
            prepared.open(self.path)
            prepared.open(self.trash.path)
            source.rename(dest)
            self.state.records.changed(entry.session_id)
            self.state.index_update(add=entry.session_id)
            prepared.sync(self.path)
            self.trash.remove_restored(entry, prepared)
            return session, unreadable

    def with_file(
        self, before: SessionRecord, directory: Path, record: FileRecord
    ) -> SessionRecord:
        """``before`` (read under the session's lock) with ``record`` added, as a read now
        gives it, without opening a file: for the answer to a change already made."""
        files = sorted([*before["files"], public(record)], key=upload_order)  # type: ignore[arg-type]
        times = [before["updated_at"], record.get("uploaded_at") or ""]
        with contextlib.suppress(OSError):  # lstat: no descriptor needed
            mtime = os.lstat(directory / RECORDS_DIR).st_mtime_ns
            times.append(_iso(datetime.fromtimestamp(mtime / 1e9, UTC)))
        return cast(SessionRecord, {**before, "files": files, "updated_at": max(times)})


def _page_size_bound(session: SessionRecord) -> int:
    """What a session counts for against a page's ``max_bytes``.

    ASCII-escaped JSON is never shorter than the UTF-8 of the answer, and this is json's C
    encoder: the bound holds, cheaply. 1,000 sessions of 62 KB metadata once made one 62 MB
    page. (The remote store measures its sessions the same way.)
    """
    return len(json.dumps(session))


def _encode(session: SessionRecord) -> tuple[bytes, int]:
    return json_body(session), _page_size_bound(session)


def _dir_key(path: str) -> tuple[int, int, int, int] | None:
    """A directory's device, inode, ctime and mtime, or None if it is not there (the ctime:
    see `records_identity`)."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_ctime_ns, info.st_mtime_ns


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def _new_session(title: str, metadata: dict[str, Any]) -> SessionRecord:
    now = _iso(datetime.now(UTC))
    return {
        "id": new_session_id(),
        "title": title,
        "metadata": metadata,
        "created_at": now,
        "updated_at": now,
        "files": [],
    }
