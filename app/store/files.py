"""The files of a session: one immutable blob and one small record per file.

A file's bytes go to a new blob first (``blobs/<version>``, never changed once written); the
rename of its record (``records/<name>``) over the old one is the single instant the file
switches, bytes and record together. The old blob is retired to the trash only after that
switch, into a trash entry whose manifest was written before it, so a crash at any instant
leaves the old acknowledged state or the new one, and ``check`` can finish or undo the
retirement. Chosen over an intent journal: the filesystem's atomic rename is already the
journal, and readers need no replay. An upload writes one blob and one record and reads one
record, however many files the session has.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import stat
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final, NoReturn

from app.dataroot import lexists, read_regular
from app.errors import (
    AppError,
    DamagedFileError,
    FileExistsInSessionError,
    FileNotFoundInSessionError,
    InvalidNameError,
    NotInTrashError,
    RestoreOverwriteError,
    TooManyFilesError,
    TrashCopyLostError,
    json_loads,
)
from app.lock import special_kind
from app.names import check_file_name, check_stored_name
from app.storage import FileEntry, SessionRecord, TrashEntry
from app.store.concurrency import identity_after_change
from app.store.ids import ID_RE, new_session_id
from app.store.records import (
    BLOBS_DIR,
    EPOCH,
    LATEST_FLOOR,
    MISSING_ERRNOS,
    RECORDS_DIR,
    FileRecord,
    bytes_in_entry,
    change_floor,
    date_records,
    ensure_dir,
    entry_bytes,
    entry_fault,
    keyed_record,
    moved_changed,
    open_regular,
    public,
    record_time,
    record_to_change,
    refuse_linked_dirs,
    trashed_entry,
)
from app.store.upload import Upload

if TYPE_CHECKING:
    from app.dataroot import Prepared
    from app.digests import Digests
    from app.storage import IfMatch
    from app.store.sessions import Sessions
    from app.store.trash import Trash

__all__ = ["Files"]

log = logging.getLogger("app.store")


class Files:
    """The files of the sessions of one open data root."""

    def __init__(
        self, sessions: Sessions, trash: Trash, *, max_upload_bytes: int, max_files: int
    ) -> None:
        self.sessions = sessions
        self.trash = trash
        self.root = sessions.root
        self.records = sessions.state.records
        self.max_upload_bytes = max_upload_bytes
        self.max_files = max_files

    def _own_dirs(self, directory: Path) -> None:
        refuse_linked_dirs(self.root.path, directory, (RECORDS_DIR, BLOBS_DIR))

    def record_path(self, session_id: str, name: str) -> Path:
        """Where the record of ``name`` is, once the id and the name are checked.

        A name is held to the rule an earlier build stored names under (`check_stored_name`),
        which a file may have (red team 38): a read, a delete or a replace of it finds it,
        and one that is not there is "no file". A new file's name is held to
        :func:`check_file_name` by the change that would make it (`_refuse_new_name`), under
        the session's lock, from the one read of the record that decides it is new: decided
        here, by a look at the name before the lock, a delete of such a file that another
        client's delete had just made was refused as an invalid name, 400, where the file was
        listed a moment before (red team 50).
        """
        records = self.sessions.directory(session_id) / RECORDS_DIR
        try:
            checked = check_file_name(name)
        except InvalidNameError as refused:
            try:
                checked = check_stored_name(name)
            except InvalidNameError:
                raise refused from None
        path = records / checked
        # The checks above already make escaping impossible; this says so at the place
        # where a path is built, in case the rules ever loosen.
        if path.parent != records or os.path.normpath(path) != str(path):
            raise InvalidNameError("file name", name, "it does not name a file in the session")
        return path

    def path(self, session_id: str, name: str) -> tuple[Path, FileEntry]:
        """Where a file's bytes are, and its entry (for tests and tools)."""
        record_path = self.record_path(session_id, name)
        directory = self.sessions.directory(session_id)
        self.sessions.require(session_id)
        record = record_to_change(record_path, session_id, "send", hashed=self.root.hashed)
        if record is not None:
            blob = directory / BLOBS_DIR / record["blob"]
            if not blob.parent.is_symlink() and blob.is_file() and not blob.is_symlink():
                return blob, public(record)
        raise FileNotFoundInSessionError(session_id, record_path.name)

    def open(self, session_id: str, name: str) -> tuple[BinaryIO, FileEntry]:
        """Open a file for sending, with the entry that describes exactly these bytes.

        The record and its blob are read under the session's lock. A blob never changes
        once written, and a replace or a delete moves it aside rather than changing it, so
        a download that found the file sends it whole.
        """
        record_path = self.record_path(session_id, name)
        with self.sessions.locked(session_id) as directory:
            blobs = directory / BLOBS_DIR
            record = (
                None
                if record_path.parent.is_symlink()
                else record_to_change(record_path, session_id, "send", hashed=self.root.hashed)
            )
            if record is not None and not blobs.is_symlink():
                try:
                    file = open(blobs / record["blob"], "rb", opener=open_regular)  # noqa: SIM115
                except OSError as error:
                    if error.errno not in MISSING_ERRNOS:
                        raise
                    if (blobs / record["blob"]).is_symlink():
                        # A 404 "no file" of a listed file (red team 41), as for a FIFO below.
                        raise DamagedFileError(
                            session_id,
                            record_path.name,
                            "are not there (their name holds a symbolic link, which the app "
                            "never follows: `app data check` names where it leads)",
                        ) from None
                    # Gone, under the lock every move of them takes: removed from outside
                    # the app. A 404 "no file ... GET lists its files", of a file the
                    # listing showed, hid the loss (red team 48).
                    raise DamagedFileError(
                        session_id, record_path.name, LOST_BYTES, "nothing of it was sent"
                    ) from None
                else:
                    mode = os.fstat(file.fileno()).st_mode
                    if stat.S_ISREG(mode):
                        return file, public(record)
                    file.close()
                    # Listed, yet "no file" was a 404 that contradicted the listing: the
                    # bytes were replaced from outside the app (red team 36).
                    kind = special_kind(mode) or "something else"
                    raise DamagedFileError(
                        session_id,
                        record_path.name,
                        f"are not there (their name holds {kind}, not a regular file)",
                    )
        raise FileNotFoundInSessionError(session_id, record_path.name)

    def begin_upload(
        self,
        session_id: str,
        name: str,
        *,
        replace: bool,
        if_match: IfMatch | None = None,
        digests: Digests | None = None,
    ) -> Upload:
        """Check all that can be refused before the first byte; then start the upload."""
        record_path = self.record_path(session_id, name)
        self.root.ensure_held()
        directory = self.sessions.directory(session_id)
        self.sessions.require(session_id)
        self._own_dirs(directory)
        old = record_to_change(record_path, session_id, "store", hashed=self.root.hashed)
        if if_match is not None:
            # Before the body too, so a stale client is not made to send it for nothing.
            # And before the rule for new names: a PUT with If-Match makes no new file, and
            # of a file an earlier build named (a no-break space) deleted since, it was told
            # 400 "invalid name" (red team 71 on integrity).
            sent = None if digests is None else digests.named()
            if_match.require("PUT", session_id, record_path.name, _version(old), sent)
        if old is None:
            _refuse_new_name(name)
        if old is not None:
            if not replace:
                raise FileExistsInSessionError(session_id, record_path.name)
        else:
            self._refuse_one_file_too_many(session_id, record_path.parent)
        return Upload(
            self, session_id, record_path.name, replace=replace, if_match=if_match, digests=digests
        )

    def _refuse_one_file_too_many(self, session_id: str, records: Path) -> None:
        # Counted only for a new name (a directory listing, not a read of the records), once
        # before the bytes arrive and again under the session lock before the commit.
        # Names alone (listdir), not scandir's entries: a third less at 9,000 files.
        try:
            names = os.listdir(records)  # noqa: PTH208 (names alone: no Path objects)
        except FileNotFoundError:
            return
        count = len(names) - sum(1 for name in names if name.startswith("."))
        if count >= self.max_files:
            raise TooManyFilesError(session_id, self.max_files, count)

    def _session_time(self, directory: Path, session_id: str) -> dict[str, Any] | None:
        """session.json's `updated_at`, as a record's time (`record_time` reads it); None
        where it cannot be read (the change's own read of the session refuses that)."""
        try:
            meta = self.sessions.meta.read(os.fspath(directory), session_id)
        except (AppError, OSError):
            return None
        return {"uploaded_at": meta.get("updated_at")}

    def floor(self, directory: Path, session_id: str, old: FileRecord | None) -> datetime | None:
        """`change_floor` of the session in ``directory`` (read under its lock) and ``old``."""
        newest = self.sessions.newest_change(directory, session_id, change_floor)
        # And the session's own time (session.json's `updated_at`: its creation), which its
        # updated_at counts too: a session created with the clock ahead, then stepped back,
        # had its first upload dated before it was created, and its updated_at did not move
        # for it, so a client that looks for sessions changed since never saw it (red team 59).
        # session.json is read through its cache (one `stat` for a session read before).
        for earlier in (old, self._session_time(directory, session_id)):
            if (moment := record_time(earlier)) is not None and (newest is None or moment > newest):
                newest = moment
        # And records/'s time, which a delete sets to its moment (`date_records`) and the
        # session's
        # updated_at counts: a delete right after an upload's rename read as no change.
        with contextlib.suppress(OSError):
            # Rounded up: `updated_at` reads this time through a float, to the nearest.
            ns = os.lstat(directory / RECORDS_DIR).st_mtime_ns
            changed = EPOCH + timedelta(microseconds=-(-ns // 1000))
            if changed < LATEST_FLOOR:
                newest = changed if newest is None else max(newest, changed)
        return newest

    def _moment(self, directory: Path, session_id: str, old: FileRecord | None) -> str:
        """When a commit switches a file in: now, or just after the session's newest change
        (the version it replaces among them, and a delete, by the time of ``records/``),
        if that reads later (a clock stepped back)."""
        moment = datetime.now(UTC)
        floor = self.floor(directory, session_id, old)
        if floor is not None:
            moment = max(moment, floor + timedelta(microseconds=1))
        return moment.isoformat(timespec="microseconds")

    def commit_upload(self, upload: Upload, entry: FileEntry) -> None:
        """Switch a complete upload into its session (:meth:`Upload.commit` calls it),
        stamping ``entry``'s ``uploaded_at`` under the session's lock."""
        session_id, name = upload.session_id, upload.name
        record_path = self.record_path(session_id, name)
        self.root.ensure_held()
        retired: TrashEntry | None = None
        with self.root.changing(), self.sessions.locked(session_id) as directory:  # gone: 404
            self._own_dirs(directory)
            old = record_to_change(record_path, session_id, "store", hashed=self.root.hashed)
            if upload.if_match is not None:
                # Under the session's lock, which every switch of this record takes: the
                # version compared is the one this commit replaces (before the rule for new
                # names, which a PUT with If-Match never makes: red team 71 on integrity).
                upload.if_match.require("PUT", session_id, name, _version(old), entry["sha256"])
            if old is None:
                _refuse_new_name(name)
            if old is not None and not upload.replace:
                raise FileExistsInSessionError(session_id, name)
            if old is None:
                self._refuse_one_file_too_many(session_id, record_path.parent)
            upload.replaced = old is not None
            # Stamped here, under the lock that orders the switches of this record: taken
            # before it, a PUT that waited for another's commit was recorded as uploaded
            # before the version it replaced (red team 50).
            # No earlier than just after the session's newest change either (`change_floor`).
            entry["uploaded_at"] = self._moment(directory, session_id, old)
            blobs = ensure_dir(directory, BLOBS_DIR)
            ensure_dir(directory, RECORDS_DIR)
            version = new_session_id()
            # The bytes go under a new, immutable name; nothing refers to them yet.
            self.root.commit_temp_file(upload.temp_path, blobs / version)

            def undo() -> None:
                with contextlib.suppress(OSError):
                    (blobs / version).unlink()
                if retired is not None:
                    self.trash.remove_empty(retired)

            try:
                # Renamed by path: what is under the new name must be what was received.
                upload.check_moved(blobs / version)
            except BaseException:
                undo()
                raise

            prepared = None
            if old is not None:
                # Before the switch: a crash right after it leaves a manifest saying where
                # the old bytes go, and `check` finishes the move.
                try:
                    retired = self.trash.new_entry(
                        session_id,
                        "file",
                        name,
                        "replace",
                        previous=trashed_entry(old),
                        blob=old["blob"],
                    )
                    prepared = self.root.prepare(retired.path, blobs, audit=True)
                except BaseException:
                    undo()
                    raise
            with prepared or contextlib.nullcontext():
                self._switch_record(session_id, record_path, {**entry, "blob": version}, undo)
                if old is not None and retired is not None and prepared is not None:
                    self._retire_blob(directory, old["blob"], retired, name, prepared)
                    prepared.audit("replace-file", f"{session_id}/{name}", trash=retired.name)

    def _switch_record(
        self, session_id: str, path: Path, record: FileRecord, undo: Callable[[], None]
    ) -> None:
        """The commit point of a file change: write its record; on failure, undo if unswitched.

        Whatever happens, the record cache learns of it. A failure after the rename (an
        fsync of the directory) leaves the switch made, and it must then stay made.
        """
        before = _inode(path)
        # With the SHA-256 of what it acknowledges (rt-regress66b): every record this writes.
        record = keyed_record(record)
        try:
            self.root.atomic_write_json(path, record)
        except BaseException:
            self.records.changed(session_id)  # whatever happened, read it again
            # Told by lstat, which needs no descriptor: reading the record back (as this
            # did) fails too in a process out of them, and a failed read once counted as
            # "not switched", undoing a switch that was made.
            with contextlib.suppress(OSError):
                if _inode(path) == before:
                    undo()
            raise
        # With records/'s identity now: its ctime moved with the rename (`records_identity`).
        self.records.changed(session_id, path.name, record, identity_after_change(str(path.parent)))

    def _retire_blob(
        self, directory: Path, blob: str, entry: TrashEntry, name: str, prepared: Prepared
    ) -> None:
        # After the switch the old blob is no longer the file; moving it into its trash entry
        # may fail (a full disk) without undoing anything: `check` finishes the move.
        try:
            there = lexists(directory / BLOBS_DIR / blob)
        except OSError as error:
            # Logged as "removed from outside the app", of bytes a look failed to see
            # (red team 52): they are there, and `check` moves them into the entry.
            log.warning(
                "file %r of session %s: could not look at its old bytes (blob %s: %s); "
                "they stay among the session's blobs, and `app data check --repair` moves "
                "them into trash entry %s once the disk reads (a server's start-up runs it)",
                name,
                directory.name,
                blob,
                error.strerror,
                entry.name,
            )
            return
        if not there:
            log.warning(
                "file %r of session %s: its bytes (blob %s) were not there, removed from "
                "outside the app; trash entry %s keeps its record for them, and `app data "
                "check` names it until they are put back into it",
                name,
                directory.name,
                blob,
                entry.name,
            )
            return
        # After the switch: a record that names them is another file's.
        if (other := self.sessions.naming(directory, directory.name, blob)) is not None:
            # A record copied outside the app (`cp records/a.pdf records/b.pdf`, a tool that
            # "copies" a file) names these bytes too. Moved into the entry, they left that
            # file without its bytes: a delete or a replace of one file made another, which
            # the app had acknowledged, a 500 "removed from outside the app" (red team 63).
            # Linked, the entry holds them and so does the other file; a blob never changes.
            log.warning(
                "file %r of session %s: its bytes (blob %s) are named by file %r too (a record "
                "copied outside the app); linked into trash entry %s, kept for that file",
                name,
                directory.name,
                blob,
                other,
                entry.name,
            )
            try:
                os.link(directory / BLOBS_DIR / blob, entry.path / bytes_in_entry(name))
                prepared.sync(entry.path)
            except OSError as error:
                log.warning(
                    "could not link blob %s into the trash yet (%s); `check` will", blob, error
                )
            return
        try:
            (directory / BLOBS_DIR / blob).rename(entry.path / bytes_in_entry(name))
            prepared.sync(entry.path, directory / BLOBS_DIR)
        except OSError as error:
            log.warning("could not move blob %s to the trash yet (%s); `check` will", blob, error)

    def delete(self, session_id: str, name: str, *, if_match: IfMatch | None = None) -> TrashEntry:
        """Move one file to the trash (only a version ``if_match`` names); audited."""
        self.root.ensure_held()
        record_path = self.record_path(session_id, name)
        name = record_path.name
        with self.sessions.locked(session_id) as directory:
            self._own_dirs(directory)
            old = record_to_change(record_path, session_id, "delete", hashed=self.root.hashed)
            if if_match is not None:
                if_match.require("DELETE", session_id, name, _version(old))
            # lexists: a link or a FIFO at the blob's name (from outside the app) is listed,
            # and moves to the trash as it is; a 404 "no file" of a listed file named no
            # way to remove it (red team 41).
            # A file whose bytes are gone (removed from outside the app) is deleted too: its
            # record goes into the trash entry, which waits for them (`_retire_blob`); a
            # 404 "no file" of a listed file named no way to remove it (red team 48).
            if old is None:
                raise FileNotFoundInSessionError(session_id, name)
            entry = self.trash.new_entry(
                session_id,
                "file",
                name,
                "delete",
                previous=trashed_entry(old),
                blob=old["blob"],
                after=self.floor(directory, session_id, old),
            )
            try:
                # What the delete needs after its commit point, opened before it.
                prepared = self.root.prepare(
                    record_path.parent, entry.path, directory / BLOBS_DIR, audit=True
                )
            except BaseException:
                self.trash.remove_empty(entry)
                raise
            with prepared:
                try:
                    self.root.ensure_held()
                    record_path.unlink()  # the commit point; needs no free space
                except BaseException:
                    # Told from the disk, not from the exception: after a Ctrl-C that lands
                    # right after the unlink, the undo removed the entry waiting for the
                    # deleted bytes, which `check` then took for an upload never
                    # acknowledged (red team 35). Made, the entry stays for `check` to fill.
                    try:
                        committed = not lexists(record_path)
                    except OSError:
                        committed = True  # unknown: the entry stays for `check` to judge
                    if committed:
                        self.records.changed(session_id)
                    else:
                        self.trash.remove_empty(entry)
                    raise
                dated = date_records(record_path.parent, entry.deleted_at)
                self.records.changed(
                    session_id,
                    name,
                    None,
                    identity_after_change(str(record_path.parent)),
                    dated=dated,
                )
                prepared.sync(record_path.parent)
                self._retire_blob(directory, old["blob"], entry, name, prepared)
                prepared.audit("trash-file", f"{session_id}/{name}", trash=entry.name)
        return entry

    def restore(
        self,
        session_id: str,
        name: str,
        prepared: Prepared,
        entry_name: str | None = None,
        audit: Callable[[TrashEntry], object] = lambda entry: None,
    ) -> tuple[SessionRecord, TrashEntry]:
        """Move the newest trashed copy of a file (or the one in ``entry_name``) back into
        its session, which must be there; the session with the file, and the trash entry
        it came from.

        ``prepared`` holds the audit log (opened before); the directories the move needs
        after it is made are opened into it before it, and the answer is the session read
        before it, with the file added: a failure after the move (EMFILE) would otherwise
        answer "nothing was changed" for a file that is back. ``audit`` writes the restore's
        line, once the file is back and before its entry is removed.
        """
        record_path = self.record_path(session_id, name)
        with self.sessions.locked(session_id) as directory:
            self._own_dirs(directory)
            if (
                record_to_change(record_path, session_id, "restore", hashed=self.root.hashed)
                is not None
            ):
                newest = self.trash.chosen(session_id, name, entry_name)
                copy = None if newest is None else entry_bytes(newest.path, name)
                raise RestoreOverwriteError(
                    session_id,
                    name,
                    None if copy is None else str(copy),
                    entry=None if newest is None else newest.name,
                    restored=_restored_last(self.root.audit_path, f"{session_id}/{name}"),
                )
            # Chosen under the session's lock, which a delete and a replace take: chosen
            # before it, a delete that committed meanwhile put a newer version in the trash,
            # and the restore brought back the one before it (red team 32).
            entry = self.trash.chosen(session_id, name, entry_name, lost=True)
            if entry is None:
                raise NotInTrashError(session_id, name, entry=entry_name)
            manifest = self.trash.read_manifest(entry)
            previous: FileEntry | dict[str, Any] = manifest.get("entry") or {}
            blobs = ensure_dir(directory, BLOBS_DIR)
            ensure_dir(directory, RECORDS_DIR)
            before = self.sessions.read(directory, session_id)
            for path in (blobs, entry.path, self.trash.path):
                prepared.open(path)
            # Back under the blob name the manifest gives: a crash before the record is
            # written leaves exactly what `check` moves back into this entry.
            blob = manifest.get("blob")
            if not (isinstance(blob, str) and ID_RE.fullmatch(blob)) or (blobs / blob).exists():
                blob = new_session_id()
            kept = entry_bytes(entry.path, name)
            # Judged through one descriptor, and the name looked at once moved: the move
            # goes by name (`moved_changed`).
            with open(kept, "rb", opener=open_regular) as held:
                judged = os.fstat(held.fileno())
                size = judged.st_size
                digest, damage = _judged(held, size, previous, hashed=self.root.hashed)

                def refuse(damage: str) -> NoReturn:
                    raise TrashCopyLostError(
                        session_id,
                        name,
                        entry.name,
                        damage=damage,
                        asked=entry_name is not None,
                        older=None
                        if entry_name is not None
                        else self.trash.older_whole(session_id, name, entry.name),
                    )

                if damage is not None:
                    refuse(damage)
                kept.rename(blobs / blob)

                def undo() -> None:
                    with contextlib.suppress(OSError):
                        (blobs / blob).rename(kept)

                if (changed := moved_changed(held.fileno(), judged, blobs / blob)) is not None:
                    undo()
                    refuse(
                        f"was changed while it was restored: what was moved {changed}; run "
                        "the restore again once that is done"
                    )
            try:
                prepared.sync(blobs, entry.path)
            except BaseException:
                undo()
                raise
            record: FileRecord = {
                "name": name,
                "size": size,
                "sha256": digest,
                "uploaded_at": previous.get("uploaded_at"),
                "blob": blob,
            }
            floor = self.floor(directory, session_id, None)
            self._switch_record(session_id, record_path, record, undo)
            # The file keeps the time it was uploaded; the session's updated_at moves on by
            # records/'s time, which with the clock stepped back stayed where it was.
            if floor is not None:
                date_records(record_path.parent, floor + timedelta(microseconds=1))
            # The line before the entry goes: killed between them, `check` finds the entry,
            # which the line names, and removes it; in the other order a kill left the
            # restore logged nowhere (red team 52).
            self.trash.remove_restored(entry, prepared, audit(entry))
            return self.sessions.with_file(before, directory, record), entry


#: What a download says of a file whose record is there and whose bytes are not.
LOST_BYTES: Final = (
    "are not there (removed from outside the app: `fsck` may have moved them to lost+found, "
    "a backup may have left them out; `app data check --repair` keeps the file's record, "
    "with their SHA-256, in the trash for them)"
)


#: The audit lines that change which version a file is.
_FILE_CHANGES: Final = ("restore-file", "trash-file", "replace-file")


def _restored_last(log: Path, target: str) -> str | None:
    """The trash entry of the restore of ``target`` (``<session>/<name>``) where it is the
    newest line of a change to that file in the audit log at ``log``; None
    where another is, or none, or the log cannot be read (a refusal's look: never raised).

    A restore run again after its output was lost is refused as the file is there; it was
    told the file was there "again", and to delete it and restore the copy it named, older
    than the one its first run had brought back (red team 71 on integrity). A file's version
    changes only with a line of its own (a create needs the name free, which a delete or a
    session's delete, then its restore of the same version, makes), so a restore's line
    newest says that restore's version may be the current one; a line a full disk lost
    makes it "may"."""
    try:
        lines = read_regular(log).splitlines()
    except OSError:
        return None
    # The target as the line spells it (`DataRoot.audit` writes ASCII JSON): only lines
    # that hold it are parsed.
    spelt = json.dumps(target).encode()
    for line in reversed(lines):
        if spelt not in line:
            continue
        try:
            record = json_loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("target") != target:
            continue
        operation, details = record.get("operation"), record.get("details")
        if operation not in _FILE_CHANGES:
            continue
        if operation != "restore-file" or not isinstance(details, dict):
            return None
        taken = details.get("trash")
        return taken if isinstance(taken, str) else None
    return None


def _judged(
    held: io.BufferedReader, size: int, previous: Mapping[str, Any], *, hashed: bool
) -> tuple[str | None, str | None]:
    """The SHA-256 a restore records of the trash copy open as ``held`` (``size`` bytes,
    ``previous`` its manifest's entry), and what is wrong with it (None: nothing)."""
    acknowledged, digest = previous.get("size"), previous.get("sha256")
    damage: str | None = None
    if (fault := entry_fault(previous, hashed=hashed)) is not None:
        # Restored, the record is written with a key of the fields it is given:
        # an upload time changed in trash.json was served as acknowledged from then
        # on (rt-regress66b).
        damage = f"has a trash.json whose {fault}"
    elif isinstance(acknowledged, int) and size != acknowledged:
        # Taken from the disk, the damaged size went into the record under the
        # acknowledged SHA-256: listed so, and past a download's check of the size
        # before a byte (red team 36).
        damage = f"holds {size} bytes, where {acknowledged} were acknowledged"
    elif isinstance(digest, str) and (found := _file_sha256(held)) != digest:
        # Bytes of the acknowledged size, changed (a flipped bit): restored under the
        # acknowledged SHA-256, answered as the version deleted, and the entry
        # removed (red team 45). Read once, as a thorough `check` reads it.
        damage = f"holds bytes whose SHA-256 is {found}, where {digest} was acknowledged"
    elif not isinstance(digest, str):
        # No version acknowledged (a blob `check` moved to the trash as an orphan, a
        # manifest without its entry): restored, it was served and listed with a
        # SHA-256 of null, and no check could ever find it damaged (red team 45).
        # The restore acknowledges these bytes: their hash is recorded.
        digest = _file_sha256(held)
    return digest, damage


def _file_sha256(file: io.BufferedReader) -> str:
    """The SHA-256 of the bytes of ``file`` (a trash copy, open), read whole."""
    return hashlib.file_digest(file, "sha256").hexdigest()


def _inode(path: Path) -> tuple[int, int] | None:
    """What ``path`` is (device, inode), or ``None`` if nothing is there; lstat only."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def _refuse_new_name(name: str) -> None:
    """Refuse a new file whose name only an earlier build's rule took (`Files.record_path`):
    such a name stays reachable while a file has it, and is given to no new one."""
    check_file_name(name)


def _version(record: FileRecord | None) -> str | None:
    """The version an If-Match compares with: the SHA-256 its ETag carries."""
    return None if record is None else record["sha256"]
