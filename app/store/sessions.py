"""The sessions of a data root: create, read, page through, move to the trash and back.

A session is ``sessions/<id>/session.json`` (id, title, metadata, times) plus its files'
records; reading one never rewrites it. Ids are time-ordered, so the directory listing
sorted by name is the creation order and a page reads only its own sessions.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from app.dataroot import (
    FILE_MODE,
    fsync,
    fsync_dir,
    json_bytes,
    lexists,
    link_remedy,
    read_regular,
    remove_tree,
    write_all,
)
from app.errors import (
    BadRequestError,
    DataRootStateError,
    NotInTrashError,
    RestoreOverwriteError,
    SessionNotFoundError,
    SessionNotServedError,
    StoreError,
    UnreadableSessionError,
    json_loads,
    shell_word,
)
from app.lock import special_kind
from app.names import check_stored_name
from app.storage import (
    LEFT_OUT_LINKED,
    LEFT_OUT_UNREADABLE,
    LeftOut,
    Page,
    SessionRecord,
    TrashEntry,
    checked_session_fields,
    json_body,
    page_body,
)
from app.store.concurrency import SYNCS, records_identity
from app.store.ids import ID_RE, check_session_id, new_session_id
from app.store.records import (
    BLOBS_DIR,
    CONTENT_KEY,
    LATEST_FLOOR,
    LEGACY_FILES_DIR,
    LEGACY_FILES_KEY,
    NEW_PREFIX,
    RECORDS_DIR,
    SESSION_FILE,
    TRASHED_SESSION,
    FileRecord,
    MetaCache,
    ValidatedCache,
    change_floor,
    content_sha256,
    date_records,
    ensure_dir,
    keyed_record,
    listed_entries,
    load_record,
    public,
    read_meta,
    record_time,
    refuse_linked_dirs,
    scan_records_linked,
    upload_order,
)

if TYPE_CHECKING:
    from app.dataroot import DataRoot, Prepared
    from app.store.trash import Trash
    from app.store.watch import SessionWatch

__all__ = ["RECORDS_MAX_AGE_SECONDS", "WATCHED_RECORDS_MAX_AGE_SECONDS", "Sessions"]

#: How long a writer's copy of a session's records answers without reading them again. A
#: record rewritten in place by hand changes no ``stat`` of what the answer is kept under
#: (session.json, records/), so without a watch this is how long such a change can go unseen.
RECORDS_MAX_AGE_SECONDS: Final = 1.0
#: The same for a session the kernel's events watch (`app.store.watch`), where every event
#: makes its records read again: this bounds what no event tells (a write through a shared
#: mapping, a filesystem mounted over records/ by root).
WATCHED_RECORDS_MAX_AGE_SECONDS: Final = 60.0

_BODY_CACHE_BYTES: Final = 64 * 1024 * 1024
_UNSETTLED_BYTES: Final = 8 * 1024 * 1024
_GIL_YIELD_EVERY: Final = 100  # sessions of a page between two hand-overs of the GIL
# Why a page passes over a session, inside this module: a directory that holds no session
# (answered as `LEFT_OUT_UNREADABLE`, with words of its own).
_MISSING: Final = "missing"

T = TypeVar("T")

log = logging.getLogger("app.store")


class Sessions:
    """The sessions of one open data root (``<root>/sessions/``)."""

    def __init__(self, root: DataRoot, trash: Trash) -> None:
        self.root = root
        self.state = root.store_state
        self.trash = trash
        self.path = root.sessions_dir
        self.where = os.fspath(self.path)  # string paths on the read paths: see _read
        self.meta = MetaCache(hashed=root.hashed)
        # Each session as the server answers it (see _encoded), with its _page_size_bound.
        self.bodies: ValidatedCache[tuple[bytes, int]] = ValidatedCache(_BODY_CACHE_BYTES)
        # The kernel's word on which kept answers may have changed (`Store.watch_sessions`,
        # the server's only): None, and each kept answer is checked with its stat calls.
        self.watch: SessionWatch | None = None
        # Answers of sessions changed in the last two seconds, which `bodies` does not keep
        # (the stat key cannot tell two writes in one clock tick apart): used only while the
        # watch says nothing changed since (an event, not a stat, tells it), at most a second.
        self.unsettled: ValidatedCache[tuple[bytes, int]] = ValidatedCache(_UNSETTLED_BYTES)
        self.records_max_age = RECORDS_MAX_AGE_SECONDS
        self.watched_records_max_age = WATCHED_RECORDS_MAX_AGE_SECONDS
        # Sessions a page left out that the log has named (once each: a page is read often).
        self.logged_left_out: set[str] = set()

    def directory(self, session_id: str) -> Path:
        """The directory of ``session_id``, once the id is checked."""
        return self.path / check_session_id(session_id)

    @contextlib.contextmanager
    def locked(self, session_id: str) -> Iterator[Path]:
        """Hold the session's lock, with the session there (`require`).

        Every change to a session happens inside this block, so changes to one session
        never interleave; the session's directory is what it yields.
        """
        directory = self.directory(session_id)
        with self.state.lock_for(session_id):
            self.require(session_id)
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
                remove_tree(path, ignore_errors=True)
        if stale:
            self.root.audit(
                "clear-unfinished-create", self.path, removed=sorted(Path(p).name for p in stale)
            )

    def create(self, title: str, metadata: dict[str, Any] | None) -> SessionRecord:
        (made,) = self.create_many([(title, metadata)])
        if isinstance(made, Exception):
            raise made
        return made

    def create_many(
        self, wanted: Sequence[tuple[str, dict[str, Any] | None]]
    ) -> list[SessionRecord | Exception]:
        """Create a session for each ``(title, metadata)``, durably; each one's session, or
        the error that refused it (the others go on).

        Each session is made as one create always was: its ``session.json`` written and
        fsynced in its staging directory, that directory fsynced, one rename making it
        appear, and an fsync of ``sessions/`` begun after the rename before it is returned.
        A batch does each step for all its sessions before the next, and one fsync of
        ``sessions/`` covers all their renames (the server's committer threads hand over
        every create waiting at once: `app.server.committer`).
        """
        try:
            self.root.ensure_held()
        except Exception as error:  # every create's answer
            return [error] * len(wanted)
        results: list[SessionRecord | Exception | None] = [None] * len(wanted)
        fields: list[tuple[int, str, dict[str, Any]]] = []
        for index, (title, metadata) in enumerate(wanted):
            try:
                # Its keys sorted here (`_keys_sorted`), not under the lock below: raised
                # there, the creates before it stayed registered as in creation for good,
                # every later session left out of every listing (red team 68 on regress,
                # rt-regress68c: a key of a str subclass whose order raises, which the
                # checks, not sorting, take).
                checked = _keys_sorted(checked_session_fields(title, metadata))
                fields.append((index, title, checked))
            except Exception as error:  # this one's answer; the others go on
                results[index] = error
        # The ids are made and registered as in creation in one step, and stay registered
        # until the session is in the index: listings show no id above one still in creation
        # (`_page`), so a client that pages or polls with the last id it saw never misses a
        # session that appears later with a smaller id (creates finish in any order).
        staged: list[_Staging] = []
        with self.state.creating_lock:
            for index, title, metadata in fields:
                session = _new_session(title, metadata)
                staged.append(_Staging(index, session, f"{NEW_PREFIX}{session['id']}"))
                self.state.creating.add(staged[-1].name)
        try:
            with self.root.prepare(self.path) as prepared:
                self._commit(staged, prepared.fd(self.path), results)
        except Exception as error:  # sessions/ not opened (EMFILE): none made
            for item in staged:
                if results[item.index] is None:
                    results[item.index] = error
        except BaseException:
            for item in staged:
                if not item.renamed:
                    item.remove(self.where)
            raise
        finally:
            for item in staged:
                item.close()
            with self.state.creating_lock:
                self.state.creating.difference_update(item.name for item in staged)
        assert all(r is not None for r in results)
        return cast("list[SessionRecord | Exception]", results)

    def _commit(
        self,
        staged: list[_Staging],
        sessions_fd: int,
        results: list[SessionRecord | Exception | None],
    ) -> None:
        """Stage, sync, rename and sync ``staged`` (see :meth:`create_many`)."""

        # The staging directory is the temporary file here: it is complete and synced before
        # one same-directory rename makes the session appear. Writing session.json inside it
        # directly (rather than through .tmp/) saves a cross-directory rename, which takes a
        # filesystem-wide lock, on the path every POST /sessions takes. Every name is taken
        # relative to the descriptor of sessions/ that is synced after the renames.
        def drop(item: _Staging, error: Exception) -> None:
            # This one's answer: its staging directory goes, the others go on.
            results[item.index] = error
            item.remove(self.where)

        def each(step: Callable[[_Staging], None], items: list[_Staging]) -> list[_Staging]:
            going = []
            for item in items:
                try:
                    step(item)
                except Exception as error:
                    drop(item, error)
                else:
                    going.append(item)
            return going

        def each_at_once(step: Callable[[_Staging], None], items: list[_Staging]) -> list[_Staging]:
            # As `each`, the steps made at once on helper threads (`SYNCS`), each answered here.
            going = []
            for item, error in zip(items, SYNCS.at_once(step, items), strict=True):
                if error is None:
                    going.append(item)
                elif not isinstance(error, Exception):
                    raise error  # not an answer: the batch stops, as `each` would
                else:
                    drop(item, error)
            return going

        going = each(lambda item: item.stage(sessions_fd, self.where), staged)
        # Each session's file then its staging directory synced, the sessions' at once: a
        # batch waited for its 2 x N fsyncs one after another, where the disk takes them
        # together. Every one has ended before any rename below.
        going = each_at_once(_Staging.sync, going)
        if going:
            try:
                self.root.ensure_held()  # the last moment before the sessions appear
            except Exception as error:  # every create's answer
                going = each(_raise(error), going)
        made = each(lambda item: item.rename(sessions_fd, self.where), going)
        if not made:
            return

        # A session.json put at the staged one's name from outside: this create's written
        # again, as `DataRoot.atomic_write_bytes` does (`_Staging.rename`). Not written, the
        # session is there all the same (listed), and its answer the error.
        failed: dict[int, Exception] = {}
        for item in made:
            if item.replaced:
                try:
                    path = Path(self.where, item.session["id"], SESSION_FILE)
                    self.root.atomic_write_bytes(path, item.data)
                except Exception as error:
                    failed[item.index] = error
        try:
            self.state.sessions_sync.sync(sessions_fd)
        except Exception as error:  # every renamed one's answer
            for item in made:
                results[item.index] = error
        else:
            for item in made:
                results[item.index] = failed.get(item.index, item.session)
        finally:
            # Listed as the disk has them, even if the sync failed (EIO): a process that
            # starts now lists them too.
            for item in made:
                self.state.index_update(add=item.session["id"])

    def get(self, session_id: str) -> SessionRecord:
        with self.served(session_id):
            return self.read(self.directory(session_id), session_id)

    def get_json(self, session_id: str) -> bytes:
        """:meth:`get`'s session as :func:`app.storage.json_body` encodes it."""
        directory = f"{self.where}/{check_session_id(session_id)}"
        with self.served(session_id):
            return self._checked_reader()(directory, session_id)[0]

    def require(self, session_id: str) -> None:
        with self.served(session_id):
            read_meta(self.directory(session_id), session_id, hashed=self.root.hashed)

    @contextlib.contextmanager
    def served(self, session_id: str) -> Iterator[None]:
        """Say `SessionNotServedError`, not `SessionNotFoundError`, for an id whose place
        holds something that is no session (`_no_session_there`): a listing counts it and
        names it unreadable, and a get, a change or a delete of it answered "no session",
        as if it were gone (red team 44 named it in the listing only)."""
        try:
            yield
        except SessionNotFoundError as error:
            if error.session_id == session_id and error.in_trash is None:
                there = self.path / check_session_id(session_id)
                if not there.is_symlink() and _no_session_there(there, session_id) is not None:
                    raise SessionNotServedError(session_id) from None
            raise

    def read(self, directory: Path, session_id: str) -> SessionRecord:
        """The session in ``directory``, with its files, as the API shows it."""
        return self._read(os.fspath(directory), session_id)

    def _read(self, directory: str, session_id: str) -> SessionRecord:
        # String paths, not pathlib: a page of 100 sessions built 300 Path objects, a third
        # of its cost.
        session = self.meta.read(directory, session_id)
        if isinstance(listed := session.get(LEGACY_FILES_KEY), list):
            # Not migrated yet (a writer's check does).
            return cast(
                SessionRecord, {**session, LEGACY_FILES_KEY: listed_entries(listed, session_id)}
            )
        records = self._records(directory, session_id)
        # A delete moves the whole directory in one rename: one that came between session.json
        # and records/ made the records read as none, and the session was answered (listed,
        # or GET) with no files, a state it never had (red team 30). session.json still there
        # after the records means they were read in place; gone, the session is too.
        self.meta.stat(directory, session_id)
        session["files"] = [public(r) for r in records]
        # Uploads and deletes never rewrite session.json: the session changed last when its
        # newest record did, or when a record was removed (the directory's mtime says when).
        # The records' newest as a time (`change_floor`), not as the greatest text: a record
        # whose `uploaded_at` was a number failed the session's every read and the whole
        # listing (TypeError, a 500), one of another form (a week date, `str(datetime)`'s)
        # or past `LATEST_FLOOR` (damage: the year 9999) was the session's `updated_at` for
        # good, and no later change moved it (red team 58).
        # And session.json's own as a time too: one of the year 9999 or a week date written
        # there by hand was the session's `updated_at` for good, past every upload and
        # restore (red team 59); as damage is, it counts for nothing then, shown only where
        # nothing else dates the session.
        own = session.get("updated_at") or session["created_at"]  # (`session_object`)
        times = []
        if (own_time := record_time({"uploaded_at": own})) is not None:
            times.append(_iso(own_time.astimezone(UTC)))
        if (newest := change_floor(records)) is not None:
            times.append(_iso(newest.astimezone(UTC)))
        with contextlib.suppress(OSError):
            mtime = os.lstat(f"{directory}/{RECORDS_DIR}").st_mtime_ns
            times.append(_iso(datetime.fromtimestamp(mtime / 1e9, UTC)))
        session["updated_at"] = max(times, default=own)
        return cast(SessionRecord, dict(sorted(session.items())))  # session.json's key order

    def records_stale(self, directory: str | None) -> None:
        """The watch's word that ``directory``'s records may have changed (None: any
        session's): the copy kept of them is read again before it answers."""
        self.state.records.expire(None if directory is None else directory.rpartition("/")[2])

    def records_entry(self, directory: str, name: str) -> None:
        """The watch's word that ``name`` was added, removed or renamed in ``directory``'s
        records/: the copy kept of them stays only if the app made that change itself."""
        self.state.records.entry(directory.rpartition("/")[2], name)

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

        Nothing of that sees a record rewritten in place by hand, so the records are read
        again (moving the token if they differ) once their copy is a second old, or a minute
        where the watch covers the session and has had no event for it since (a record
        linked elsewhere: on every read, never trusted on the watch).
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
        # The records, read again if their copy is too old (an event expires it): one written
        # in place changed nothing the validator holds, except the token this moves.
        max_age = self.records_max_age if count is None else self.watched_records_max_age
        if cache.due(session_id, max_age):
            self._records(directory, session_id, max_age)
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
        if count is not None and watch is not None and not cache.linked(session_id):
            watch.checked(directory, count, validator)
        return encoded

    def records_of(self, directory: Path, session_id: str) -> list[FileRecord]:
        """The records of the session in ``directory`` (under its lock: its files now)."""
        return self._records(os.fspath(directory), session_id)

    def naming(self, directory: Path, session_id: str, blob: str) -> str | None:
        """The name of a file of the session in ``directory`` (under its lock) whose record
        names ``blob``, else ``None``: from the copy of its records `newest_change` trusts,
        so that a change reads them again no more often than it does."""
        where = os.fspath(directory)
        max_age = self.watched_records_max_age
        if self.root.writable:
            max_age = self._records_trust(where, session_id)
        for record in self._records(where, session_id, max_age):
            if record.get("blob") == blob:
                return str(record.get("name"))
        return None

    def newest_change(
        self,
        directory: Path,
        session_id: str,
        fold: Callable[[Iterable[FileRecord]], datetime | None],
    ) -> datetime | None:
        """``fold`` (`app.store.records.change_floor`) of the records of the session in
        ``directory`` (under its lock), kept by the record cache as writes change them
        (`RecordCache.newest`) rather than worked out again over every file.

        Trusted for a minute (`WATCHED_RECORDS_MAX_AGE_SECONDS`) where the watch covers the
        session (`_records_trust`), not the second a read of an unwatched session is: each
        change of a session a second after the one before read all its records again, 490 ms
        for an upload to a session of 9,000 files on a busy machine (bench/session_size.py).
        Every file added, removed or renamed in ``records/`` changes its identity, the app's
        own writes update the copy, and a record rewritten in place by hand raises an event
        that expires it (red team 58); what is left is a write through a shared mapping,
        which raises none.
        """
        where = os.fspath(directory)
        max_age = self.watched_records_max_age
        if self.root.writable:
            max_age = self._records_trust(where, session_id)
            identity = records_identity(f"{where}/{RECORDS_DIR}")
            found, newest = self.state.records.newest(session_id, identity, max_age, fold)
            if found:
                return newest
        return fold(self._records(where, session_id, max_age))

    def _records_trust(self, directory: str, session_id: str) -> float:
        """How old a copy of the records of the session in ``directory`` may be for a
        change's floor: a minute where the watch has seen every change there since (its
        events taken first), a second, as a read's, where nothing watches it.

        Trusted a minute on no word of the watch's, a record rewritten in place by hand (a
        `cp` of one record from a backup onto it) was missed by every change made within
        the minute with no read between: an upload right after it was dated before it
        (red team 58). A session the watch begins to cover here is read again: its copy
        may be older than its watches."""
        watch = self.watch
        if watch is None:
            return self.records_max_age
        watch.drain()
        if watch.watched(directory):
            return self.watched_records_max_age
        if watch.begin(directory) is None:
            return self.records_max_age
        self.state.records.expire(session_id)
        return self.watched_records_max_age

    def _records(
        self, directory: str, session_id: str, max_age: float | None = None
    ) -> list[FileRecord]:
        cache = self.state.records if self.root.writable else None
        if cache is not None:
            identity = records_identity(f"{directory}/{RECORDS_DIR}")
            cached, token = cache.get(
                session_id, identity, self.records_max_age if max_age is None else max_age
            )
            if cached is not None:
                cached.sort(key=upload_order)
                return cached
        records: list[FileRecord]
        if cache is not None and identity is None:
            records, linked = [], False  # no records/ (no upload yet): nothing to scan
        else:
            records, linked = scan_records_linked(Path(directory), hashed=self.root.hashed)
        if cache is not None:
            cache.store(session_id, records, token, identity, linked)
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
            name = check_stored_name(str(old.get("name")))  # the rule of the build that wrote it
            record_path = directory / RECORDS_DIR / name
            # Whatever its other fields (a list a tool wrote, copied as it was): taken for no
            # record, a repeated step wrote another over it, naming bytes not there, and the
            # file's bytes were named by none (red team 59 on regress, the HTTP contract).
            record = load_record(record_path, shaped=False)
            source = legacy / name
            if (
                record is not None
                and record.get("sha256") != old.get("sha256")
                and source.is_file()
                and not source.is_symlink()
            ):
                # Not this migration's own record (that one carries the list's SHA-256): a
                # build from before records/ (a downgrade) replaced the file after this
                # layout was laid out, blind to the record. Its version was the last one
                # acknowledged; it was dropped from the listing, its bytes left in files/,
                # and `check` said "clean" (red team 56). It becomes the file's version; the
                # record's blob, which no record names then, goes to the trash as an orphan.
                log.warning(
                    "session %s: file %r was replaced by a build from before records/ and "
                    "blobs/; its version (sha256 %s) is kept as the file's, the earlier one "
                    "(sha256 %s) goes to the trash",
                    directory.name, name, old.get("sha256"), record.get("sha256"),
                )  # fmt: skip
                record = None
            if record is None:
                # The list's own fields as written (`public` would show a number of
                # seconds in `uploaded_at` as null, and the migration would lose it).
                fields = {k: old.get(k) for k in ("size", "sha256", "uploaded_at")}
                record = keyed_record({**fields, "name": name, "blob": new_session_id()})
                self.root.atomic_write_json(record_path, record)
            if not (blobs / record["blob"]).exists() and source.is_file():
                source.rename(blobs / record["blob"])
                fsync_dir(blobs)
        fsync_dir(directory / RECORDS_DIR)
        meta = {k: v for k, v in meta.items() if k != LEGACY_FILES_KEY}
        if _keyed(directory):
            # A session this build made, its files then listed by a build from before
            # records/ (a downgrade): rewritten without its key, it was read unchecked from
            # then on, a title changed on the disk served as acknowledged (red team 65 on
            # regress). `meta` passed the comparison as it was read (`read_meta`).
            meta[CONTENT_KEY] = content_sha256(meta)
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

        items, total, cursor, passed = self._page(limit, after, max_bytes, read)
        return Page([session for _, session in items], total, cursor, passed)

    def page_json(self, limit: int, after: str | None, max_bytes: int | None) -> bytes:
        """:meth:`page` as :func:`app.storage.json_body` encodes it, joined from kept bytes."""
        items, total, cursor, passed = self._page(limit, after, max_bytes, self._checked_reader())
        return page_body([body for _, body in items], total, cursor, passed)

    def _page(
        self,
        limit: int,
        after: str | None,
        max_bytes: int | None,
        read: Callable[[str, str], tuple[T, int]],
    ) -> tuple[list[tuple[str, T]], int, str | None, tuple[LeftOut, ...]]:
        """A page's sessions as ``read`` gives them (with their bound), its total, cursor,
        and the sessions of its range it counts but cannot show."""
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
        passed: list[LeftOut] = []
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
            except (SessionNotFoundError, UnreadableSessionError):
                # Deleted between the listing and this read: simply not shown. A link (moved
                # out and linked back) is never followed, and one damaged session.json must
                # not fail every page that holds it, for every client: each is left out,
                # named in the page's `left_out` (it counts in `total`) and in the log.
                if (left := self._left_out(session_id)) is not None:
                    passed.append(left)
                continue
            if max_bytes is not None:
                size += bound
                if items and size > max_bytes:
                    # Past the sessions this page left out too: the next page began at its
                    # last item, and named them again (red team 44).
                    cursor = max([items[-1][0], *(left.id for left in passed)])
                    return items, total, cursor, tuple(passed)
            items.append((session_id, item))
        more = start + limit < total
        return items, total, chosen[-1] if more and chosen else None, tuple(passed)

    def _left_out(self, session_id: str) -> LeftOut | None:
        """What a page says of a session it passes over (None if it is gone), named in the
        log the first time: the page's word names no path of the server's, the log does."""
        found = self.left_out_reason(session_id)
        if found is None:
            return None
        reason, why = found
        if session_id not in self.logged_left_out:
            self.logged_left_out.add(session_id)
            log.warning("session %s is left out of GET /sessions: %s", session_id, why)
        if reason == _MISSING:
            message = (
                f"session {session_id} is counted but not shown: its directory holds no "
                "session.json the app can read (removed, or replaced by something else), or "
                "is not a directory; the server's log and `app data check` name it and what "
                "to do"
            )
        elif reason == LEFT_OUT_LINKED:
            message = (
                f"session {session_id} is counted but not shown: its directory is a symbolic "
                "link (moved out of the data root and linked back), which the app never "
                "follows; the server's log and `app data check` name the link and the "
                "command that puts the directory back"
            )
        else:
            message = (
                f"session {session_id} is counted but not shown: its session.json cannot be "
                "read (damaged, or not written by the app); the server's log and `app data "
                "check` name the file and what to do"
            )
        return LeftOut(session_id, LEFT_OUT_UNREADABLE if reason == _MISSING else reason, message)

    def left_out(self, listed: set[str]) -> list[tuple[str, str]]:
        """Each session under ``sessions/`` but not in ``listed`` that a listing leaves out,
        with why and what puts it back (red team 43: it was left out without a word)."""
        found = []
        for session_id in self.scan_ids():
            if session_id not in listed and (why := self.left_out_why(session_id)) is not None:
                found.append((session_id, why))
        return found

    def left_out_why(self, session_id: str) -> str | None:
        """Why a listing leaves ``session_id`` out, or None if it is gone (or readable)."""
        found = self.left_out_reason(session_id)
        return None if found is None else found[1]

    def left_out_reason(self, session_id: str) -> tuple[str, str] | None:
        """Why a listing leaves ``session_id`` out, as a `LeftOut` reason and the words
        that name the paths and what puts it back; None if it is gone (or readable)."""
        directory = self.path / session_id
        if directory.is_symlink():
            try:
                remedy = link_remedy(directory, "restore the session from a backup")
                where = f"(to {directory.readlink()}) "
            except OSError:  # gone since
                return None
            return LEFT_OUT_LINKED, (
                f"{directory} is a symbolic link {where}where a session's directory belongs: "
                f"the app never follows one, so the session is not served; {remedy}"
            )
        try:
            self.read(directory, session_id)
        except UnreadableSessionError as error:
            return LEFT_OUT_UNREADABLE, str(error)
        except SessionNotFoundError:
            # Gone (deleted meanwhile), or there but no session: a directory whose
            # session.json was removed or made a directory or FIFO, a file in the
            # directory's place. Those were counted in `total` and named nowhere but by
            # `check` (red team 44).
            return _no_session_there(directory, session_id)
        return None

    def iter_all(self) -> Iterator[SessionRecord]:
        for session_id in self.ids():
            with contextlib.suppress(SessionNotFoundError, UnreadableSessionError):
                yield self.read(self.path / session_id, session_id)

    def move_to_trash(
        self, session_id: str, reason: str, unaudited: set[str] | None = None
    ) -> TrashEntry:
        """Move a session, files and all, into a new trash entry (not audited here).

        ``unaudited``: a block of `RootState.unaudited_moves` the entry is added to, which the
        caller ends once it has written the audit line; an `empty-trash` leaves it till then.
        """
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
            if unaudited is not None:
                self.state.add_unaudited(unaudited, entry.name)
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
                # Told from the disk, not from the exception: a Ctrl-C lands right after
                # the rename too, and the session is then in the trash (red team 35).
                moved: bool | None
                try:
                    moved = lexists(entry.path / TRASHED_SESSION)
                except OSError:
                    moved = None  # unknown: the entry stays for `check` to tell (red team 52)
                prepared.close()
                self.state.records.changed(session_id)
                if moved:
                    self.state.index_update(remove=session_id)
                elif moved is not None:
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
        self,
        session_id: str,
        prepared: Prepared,
        entry_name: str | None = None,
        audit: Callable[[TrashEntry], object] = lambda entry: None,
    ) -> tuple[SessionRecord | None, StoreError | None, TrashEntry]:
        """Move the newest trashed copy of a session (or the one in ``entry_name``) back;
        refused if a session with its id exists again.

        Returns the session as it now reads, or, for one damaged from outside the app, the
        error reading it gives (it moves back all the same, to be cleared or mended); and
        the trash entry it came from.
        """
        dest = self.path / session_id
        with self.state.lock_for(session_id):
            # Chosen under the session's lock, which a delete takes: chosen before it, a
            # restore and a delete by another thread meanwhile emptied the chosen entry and
            # made a newer one, and the restore failed with a bare FileNotFoundError (red
            # team 33), as a file's restore brought back an older version (red team 32).
            entry = self.trash.chosen(session_id, None, entry_name)
            if entry is None:
                raise NotInTrashError(session_id, entry=entry_name)
            if dest.is_symlink():
                # Taken for "no session" (exists() follows it): the move met the link and
                # failed as a filesystem fault, "may be made in part", `dmesg` (red team 46).
                raise DataRootStateError(
                    self.root.path,
                    f"the restore of session {session_id} would put it back at {dest}, where a "
                    f"symbolic link stands (to {dest.readlink()}), which the app never follows; "
                    "nothing was changed",
                    link_remedy(dest, "remove the link, then restore again"),
                )
            if (what := _no_session_at(dest)) is not None:
                # "Exists again: delete the current one first", of what a DELETE refuses to
                # move (no session the trash could give back): a loop (red team 46).
                raise DataRootStateError(
                    self.root.path,
                    f"the restore of session {session_id} would put it back at {dest}, where "
                    f"{what} stands, which is no session the app can read or delete; nothing "
                    "was changed",
                    f"move it aside (`mv {shell_word(dest)} <elsewhere>`) with no server on the "
                    "root, then restore again; `app data check` reports it",
                )
            if dest.exists():
                raise RestoreOverwriteError(
                    session_id, None, str(entry.path / TRASHED_SESSION), entry=entry.name
                )
            source = entry.path / TRASHED_SESSION
            moment = self._restore_moment(source, entry)
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
            if moment is not None:
                self._date_restored(dest, source, moment)
                if session is not None:
                    # The answer, read before the move, with the time just given.
                    session = self.dated(session, dest)
            self.state.records.changed(entry.session_id)
            self.state.index_update(add=entry.session_id)
            prepared.sync(self.path)
            # The line before the entry goes, as a file's restore (red team 52).
            self.trash.remove_restored(entry, prepared, audit(entry))
            return session, unreadable, entry

    def _restore_moment(self, source: Path, entry: TrashEntry) -> datetime | None:
        """When the restore of the trashed session at ``source`` is dated: after its every
        change and its delete (``entry``'s time), by its ``records/``'s time, which its
        ``updated_at`` counts (`_date_restored`). Its directory moves whole, its times too:
        a restored session read as last changed before its delete, and a client that looks
        for the sessions changed since the newest ``updated_at`` it saw never saw it come
        back (red team 59). ``None`` for a session the app cannot read (damaged, or of the
        layout before ``records/``): it moves back as it is."""
        try:
            if isinstance(
                self.meta.read(os.fspath(source), entry.session_id).get(LEGACY_FILES_KEY), list
            ):
                return None
            session = self._read(os.fspath(source), entry.session_id)
        except (SessionNotFoundError, UnreadableSessionError):
            return None
        moment = datetime.now(UTC)
        with contextlib.suppress(TypeError, ValueError):
            newest = datetime.fromisoformat(session["updated_at"])
            for earlier in (newest, entry.deleted_at):
                if earlier.tzinfo is not None and earlier < LATEST_FLOOR:
                    moment = max(moment, earlier + timedelta(microseconds=1))
        return moment

    def date_recovered(self, entry: TrashEntry) -> None:
        """Date the session a restore from ``entry`` moved back before it was killed (`app
        data check --repair` finishing it, `_restore_moment`): killed between its move and
        its dating, it came back dated before its delete, and the repair that removed its
        entry left it so (red team 59). Undated where its ``records/`` cannot be made. The
        caller holds the session's lock (the repair's, `Checker`)."""
        directory = self.path / entry.session_id
        moment = self._restore_moment(directory, entry)
        if moment is None:
            return
        try:
            date_records(ensure_dir(directory, RECORDS_DIR), moment)
        except OSError as error:
            log.warning("session %s restored, but not dated: %s", entry.session_id, error)
            return
        self.state.records.changed(entry.session_id)

    def _date_restored(self, dest: Path, source: Path, moment: datetime) -> None:
        """Date the session just moved back to ``dest`` at ``moment`` (`_restore_moment`),
        its ``records/`` made, empty, for a session that never had a file.

        After the move, never before it: dated in its entry, a restore whose move was then
        refused (EXDEV: a session of an image's lower layer on overlayfs, a mount inside
        the root) had changed the entry it said was unchanged, and copied it up into the
        container's layer (red team 59, on red team 38's test). A ``records/`` that cannot
        be made (a full disk) moves the session back into its entry and refuses the
        restore with nothing changed, rather than bring it back undated."""
        try:
            date_records(ensure_dir(dest, RECORDS_DIR), moment)
        except OSError:
            try:
                dest.rename(source)
            except OSError:
                # Back, undated: the restore stands (its line and the entry's removal follow).
                log.warning("session %s restored, but its records/ could not be dated", dest.name)
                return
            raise

    def dated(self, before: SessionRecord, directory: Path) -> SessionRecord:
        """``before`` with the time of ``directory``'s ``records/`` counted in its
        ``updated_at``, as a read now gives it (one ``lstat``)."""
        with contextlib.suppress(OSError):  # lstat: no descriptor needed
            mtime = os.lstat(directory / RECORDS_DIR).st_mtime_ns
            moved = _iso(datetime.fromtimestamp(mtime / 1e9, UTC))
            return cast(SessionRecord, {**before, "updated_at": max(before["updated_at"], moved)})
        return before

    def with_file(
        self, before: SessionRecord, directory: Path, record: FileRecord
    ) -> SessionRecord:
        """``before`` (read under the session's lock) with ``record`` added, as a read now
        gives it, without opening a file: for the answer to a change already made."""
        files = sorted([*before["files"], public(record)], key=upload_order)  # type: ignore[arg-type]
        newest = max(before["updated_at"], record.get("uploaded_at") or "")
        return self.dated(
            cast(SessionRecord, {**before, "files": files, "updated_at": newest}), directory
        )


def _no_session_at(place: Path) -> str | None:
    """What stands at a session's place that is no session (not a directory, or one with no
    regular ``session.json``), or ``None`` if nothing or a session directory is there."""
    try:
        mode = place.lstat().st_mode
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(mode):
        return special_kind(mode) or "a regular file"
    try:
        held = (place / SESSION_FILE).lstat().st_mode
    except FileNotFoundError:
        return f"a directory with no {SESSION_FILE}"
    # A file or a link there is a session's, damaged at worst: a DELETE moves it as it is.
    if stat.S_ISREG(held) or stat.S_ISLNK(held):
        return None
    return f"a directory whose {SESSION_FILE} is {special_kind(held) or 'not a file'}"


def _keyed(directory: Path) -> bool:
    """Whether ``directory``'s session.json keeps a `CONTENT_KEY` (which `read_meta` does not
    return)."""
    try:
        found = json_loads(read_regular(directory / SESSION_FILE))
    except (OSError, ValueError):
        return False
    return isinstance(found, dict) and CONTENT_KEY in found


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
    """A new session's record; ``metadata`` as `_keys_sorted` gives it."""
    now = _iso(datetime.now(UTC))
    return {
        "id": new_session_id(),
        "title": title,
        # As session.json keeps it (`json_bytes` sorts every object's keys), which every
        # read answers: the create answered the order sent, and each read after it another
        # (red team 68; red team 63 had the same of PostgreSQL's column retyped jsonb).
        "metadata": metadata,
        "created_at": now,
        "updated_at": now,
        "files": [],
    }


def _keys_sorted(value: Any) -> Any:
    """``value`` with every object's keys in the order `json_bytes` writes them (sorted), and
    every array a list, as a read of the ``session.json`` it is written into gives it back.

    Copied level by level, not by recursion: a copy that recursed (two frames a level) was
    a bare RecursionError at about 480 levels, of metadata that `checked_session_fields`
    takes up to about 990 (``json.dumps`` in C, a frame a level) and that was stored before;
    in a batch, the creates before it stayed registered as in creation for good, and every
    session made after them was left out of every listing (red team 68 on regress). What
    ``json.dumps`` writes as an object or an array (a ``dict`` subclass, a tuple) is copied
    as one: an ``OrderedDict`` was answered in the order sent. Its values are read as
    ``json.dumps`` reads them, by ``items()``: read by ``[]``, a subclass whose ``[]`` is
    another view of it was answered with values no read gives back, or raised (red team 68
    on regress, rt-regress68c)."""
    if not isinstance(value, dict | list | tuple):
        return value
    top: Any = {} if isinstance(value, dict) else []
    pending: list[tuple[Any, Any]] = [(value, top)]
    new: Any
    while pending:
        source, target = pending.pop()
        if type(target) is dict:
            # A subclass's items as `json.dumps` reads them (``items()``); an exact dict's
            # by ``[]``, the same, sooner.
            view = source if type(source) is dict else dict(source.items())
            for key in sorted(view):
                item = view[key]
                if isinstance(item, dict):
                    target[key] = new = {}
                    pending.append((item, new))
                elif isinstance(item, list | tuple):
                    target[key] = new = []
                    pending.append((item, new))
                else:
                    target[key] = item
        else:
            for item in source:
                if isinstance(item, dict):
                    target.append(new := {})
                    pending.append((item, new))
                elif isinstance(item, list | tuple):
                    target.append(new := [])
                    pending.append((item, new))
                else:
                    target.append(item)
    return top


def _raise(error: Exception) -> Callable[[_Staging], None]:
    def step(item: _Staging) -> None:
        raise error

    return step


class _Staging:
    """One session of :meth:`Sessions.create_many` on its way: ``sessions/.new-<id>/``."""

    def __init__(self, index: int, session: SessionRecord, name: str) -> None:
        self.index = index
        self.session = session
        self.name = name
        self.dir_fd: int | None = None
        self.file_fd: int | None = None
        self.renamed = False
        self.data = b""
        self.written: tuple[int, int] | None = None
        #: Renamed into place holding another session.json than the one written.
        self.replaced = False

    def stage(self, sessions_fd: int, where: str) -> None:
        """Make the staging directory in ``where`` (sessions/, open as ``sessions_fd``) and
        write session.json in it (synced later)."""
        stored: dict[str, Any] = {k: v for k, v in self.session.items() if k != "files"}
        stored[CONTENT_KEY] = content_sha256(stored)  # files: records/; this: red team 65
        try:
            os.mkdir(self.name, mode=0o700, dir_fd=sessions_fd)
        except OSError as error:
            # By its whole path: which directory of the root is full (EMLINK) is told by it.
            error.filename = f"{where}/{self.name}"
            raise
        self.dir_fd = os.open(
            self.name,
            os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
            dir_fd=sessions_fd,
        )
        # O_EXCL: never into a file that is there (in a directory just made, none can be).
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        # By its whole path, not relative to dir_fd: the "open" audit event carries no dir_fd,
        # and the red teams' hooks find what a write opens from the path it names.
        self.file_fd = os.open(f"{where}/{self.name}/{SESSION_FILE}", flags, FILE_MODE)
        self.data = json_bytes(stored)
        write_all(self.file_fd, self.data)

    def remove(self, where: str) -> None:
        """Close the staging directory and remove it from ``where`` (sessions/).

        It holds session.json at most, so an unlink and an rmdir remove it, which open no
        descriptor. `remove_tree` opens each directory it walks: a create refused out of
        descriptors (EMFILE, answered "nothing was changed") left its ``.new-<id>`` there
        whenever another request had taken the ones this create gave back, and `app data
        check` reported a create "that crashed before its rename", until the next start
        (red team 71 on the HTTP contract, a server at its file limit).

        session.json is unlinked relative to the directory this create made (``dir_fd``,
        kept open until the rename for this), never by its path: ``.new-<id>`` made a link
        to another session's directory before a failed step had that session's
        session.json unlinked, where `remove_tree` never follows a link (red team 71 on
        regress, rt-regress71d). The rmdir takes no link either (ENOTDIR, then the walk,
        which leaves it).
        """
        path = Path(where, self.name)
        if self.dir_fd is not None:  # else none was opened, so none was written
            with contextlib.suppress(FileNotFoundError):
                os.unlink(SESSION_FILE, dir_fd=self.dir_fd)
        self.close()
        try:
            path.rmdir()
        except FileNotFoundError:
            pass
        except OSError:  # something more in it: the walk, which needs descriptors
            remove_tree(path, ignore_errors=True)

    def sync_file(self) -> None:
        assert self.file_fd is not None
        fsync(self.file_fd)
        written = os.fstat(self.file_fd)
        self.written = (written.st_dev, written.st_ino)
        os.close(self.file_fd)
        self.file_fd = None

    def sync_dir(self) -> None:
        # Left open until the rename or the removal (`remove`): no more descriptors at once
        # than the stage held.
        assert self.dir_fd is not None
        fsync(self.dir_fd)

    def sync(self) -> None:
        """session.json synced, then its staging directory (on a helper thread)."""
        self.sync_file()
        self.sync_dir()

    def rename(self, sessions_fd: int, where: str) -> None:
        try:
            os.rename(self.name, self.session["id"], src_dir_fd=sessions_fd, dst_dir_fd=sessions_fd)
        except OSError as error:
            # By their whole paths, as `stage` does: a full index of sessions/ (ENOSPC with
            # room on the disk) is told by the name the call made (red team 75).
            error.filename, error.filename2 = (
                f"{where}/{self.name}",
                f"{where}/{self.session['id']}",
            )
            raise
        self.renamed = True
        # Looked at through the directory this create made, once it is in place: another
        # file put at .new-<id>/session.json before the rename was the session created, a
        # POST answered 201 of a session.json that was not its own (red team 76 on
        # integrity). Where it is, the caller writes this one's again (`replaced`).
        assert self.dir_fd is not None
        with contextlib.suppress(OSError):  # gone: the next read says so
            there = os.stat(SESSION_FILE, dir_fd=self.dir_fd, follow_symlinks=False)
            self.replaced = (there.st_dev, there.st_ino) != self.written
        self.close()

    def close(self) -> None:
        for fd in (self.file_fd, self.dir_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.file_fd = self.dir_fd = None


def _no_session_there(directory: Path, session_id: str) -> tuple[str, str] | None:
    """Why ``directory`` (not a link), which read as no session, is listed yet not shown;
    None if nothing is there any more (deleted between the listing and the read)."""
    try:
        mode = directory.lstat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISDIR(mode):
        kind = "a regular file" if stat.S_ISREG(mode) else special_kind(mode) or "not a directory"
        return _MISSING, (
            f"{directory} is {kind} where session {session_id}'s directory belongs, so the "
            "session is not served; `app data check` reports it as session-unreadable. "
            "Move it aside and restore the session from a backup"
        )
    found = directory / SESSION_FILE
    try:
        kind = special_kind(found.lstat().st_mode) or "not a regular file"
    except FileNotFoundError:
        kind = "missing"
    return _MISSING, (
        f"cannot read session {session_id}: its session.json ({found}) is {kind}, so the "
        "session is not served; `app data check` reports it as session-unreadable. Put "
        "session.json back from a backup, or move the directory aside"
    )
