"""The layout of a session on disk, its typed records, and reading them safely.

::

    sessions/<id>/session.json      the session: id, title, metadata, times (not its files)
    sessions/<id>/records/<name>    one file's record (JSON): size, sha256, time, blob
    sessions/<id>/blobs/<version>   the bytes a record names; never changed once written
    sessions/.new-<id>/             a session being created (renamed to <id> when complete)
    .trash/<timestamp>-<id>/        a deleted session: trash.json + session/
    .trash/<timestamp>-<id>-file-<hex>/   a deleted or replaced file: trash.json + <name>
                                          (`bytes_in_entry`: .trash.json for trash.json,
                                          and for a name that folds to it: .Trash.json)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import stat
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Generic, Literal, NotRequired, TypedDict, TypeVar, cast

from app.dataroot import NotRegularFileError, fsync_dir, lexists, read_regular
from app.errors import (
    DataRootChangedError,
    FileNameFoldedError,
    FileRecordUnreadableError,
    SessionNotFoundError,
    UnreadableSessionError,
    json_loads,
)
from app.storage import FileEntry
from app.store.ids import ID_RE

__all__ = [
    "BLOBS_DIR",
    "CONTENT_CHANGED",
    "CONTENT_KEY",
    "CONTENT_MISSING",
    "ENTRY_REHASH",
    "EPOCH",
    "LATEST_FLOOR",
    "LEGACY_FILES_DIR",
    "LEGACY_FILES_KEY",
    "MANIFEST_CHANGED",
    "MISSING_ERRNOS",
    "NEW_PREFIX",
    "RECORDS_DIR",
    "RECORD_CHANGED",
    "RECORD_UNKEYED",
    "REHASH",
    "SESSION_FILE",
    "TRASHED_SESSION",
    "TRASH_MANIFEST",
    "UNKNOWN_KEY",
    "FileRecord",
    "MetaCache",
    "TrashManifest",
    "ValidatedCache",
    "change_floor",
    "content_sha256",
    "content_sha256_or_none",
    "date_records",
    "ensure_dir",
    "entry_bytes",
    "entry_changed",
    "entry_fault",
    "keyed_record",
    "listed_entries",
    "load_record",
    "manifest_changed",
    "manifest_sha256",
    "moved_changed",
    "open_regular",
    "public",
    "read_meta",
    "record_blob",
    "record_sha256",
    "record_sha256_or_none",
    "record_time",
    "record_to_change",
    "refuse_linked_dirs",
    "scan_records",
    "scan_records_linked",
    "shape_damage",
    "shape_fault",
    "trashed_entry",
    "upload_order",
]

log = logging.getLogger("app.store")

SESSION_FILE: Final = "session.json"
RECORDS_DIR: Final = "records"
BLOBS_DIR: Final = "blobs"
# Sessions written before records/ and blobs/ listed their files in session.json, and kept
# the bytes in files/<name>; a writer's start-up check migrates them.
LEGACY_FILES_KEY: Final = "files"
LEGACY_FILES_DIR: Final = "files"
TRASH_MANIFEST: Final = "trash.json"
TRASHED_SESSION: Final = "session"
#: The key of ``session.json`` that holds the SHA-256 of what its create acknowledged
#: (:func:`content_sha256`); never shown in an answer.
CONTENT_KEY: Final = "content_sha256"
NEW_PREFIX: Final = ".new-"

LATEST_FLOOR: Final = datetime(9999, 1, 1, tzinfo=UTC)
"""A change is dated after no time this late: one is damage (a record or an entry's name
edited by hand), and "just after" the last microsecond Python holds was an `OverflowError`,
a 500 on every replace and delete in the session."""


def record_time(record: Mapping[str, Any] | None) -> datetime | None:
    """A record's ``uploaded_at`` as a time a change can be dated after, ``None`` where it
    is none (missing, not a time, without a zone, or at or past `LATEST_FLOOR`)."""
    text = record.get("uploaded_at") if record is not None else None
    try:
        moment = datetime.fromisoformat(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if moment.tzinfo is None or moment >= LATEST_FLOOR else moment


EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def date_records(records: Path, moment: datetime) -> bool:
    """Set ``records``' modification time to a delete's ``moment`` where the kernel's is
    earlier (the clock stepped back): the session's `updated_at` is the newest of its
    records' times and this one, and with the kernel's alone a delete left it where it was,
    or moved it back, so a client that looks for sessions changed since never saw it.
    Whether it set it (the kernel's coarse clock often lags ``moment`` by a tick)."""
    with contextlib.suppress(OSError):  # after the commit point: the delete stands
        # Half a microsecond on: read back through a float (`updated_at`), it is not moment's
        # microsecond less one.
        since = moment - EPOCH
        wanted = (since // timedelta(microseconds=1)) * 1000 + 500
        if os.lstat(records).st_mtime_ns < wanted:
            os.utime(records, ns=(wanted, wanted), follow_symlinks=False)
            return True
    return False


# The one form the app writes a time in (UTC, to the microsecond): only text of this form
# sorts as its time does. fromisoformat reads others of the same length as well (a space or
# any other character between date and time, as `str(datetime)` writes it; a week date,
# `2026-W49-7`), and taken by the text, the newest of those was missed (red team 58).
_OWN_TIME: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}\+00:00", re.ASCII
)


def change_floor(records: Iterable[FileRecord]) -> datetime | None:
    """The newest ``uploaded_at`` among a session's records: a change of the session (an
    upload's switch, a delete's trash entry) is stamped after it and after the time of the
    session's ``records/``, which a delete sets to its own (`app.store.files`). With the clock
    stepped back (a VM snapshot, a board that boots before NTP), a file deleted and put again was
    stamped a day before the version it followed, a new file before the older ones it is
    listed after, and the delete's entry before the upload it deleted; a client that
    fetches what changed since the newest `uploaded_at` it saw never saw either (red team
    56, second round). Red team 50 bounded a replace by the version it replaces alone."""
    # A maximum of `record_time` over the records, so that the record cache can keep it as
    # writes change the session (`RecordCache.newest`). The app writes every time as UTC to
    # the microsecond, one form (`_OWN_TIME`): those sort as text, and only the newest is
    # parsed (10,000 records parsed took 12 ms on each upload); others (another form of the
    # same length too: red team 58) are parsed one by one, and all of them where the newest
    # does not parse (damage).
    records = list(records)
    own, other = "", []
    match = _OWN_TIME.fullmatch
    for record in records:
        text = record.get("uploaded_at")
        if isinstance(text, str) and match(text):
            own = max(own, text)
        else:
            other.append(record)
    newest = record_time({"uploaded_at": own}) if own else None
    if own and newest is None:
        other = records
    times = [t for t in map(record_time, other) if t is not None]
    return max([*times, newest] if newest is not None else times, default=None)


MISSING_ERRNOS: Final = frozenset({errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.ENXIO})
_MAX_RECORD_BYTES: Final = 64 * 1024
_META_CACHE_BYTES: Final = 64 * 1024 * 1024
# A file whose inode changed less than this long ago is not kept: a later version written
# within the same clock tick could have the same size and times (the "racily clean" entries
# of git's index), and its ctime could not tell them apart yet.
_SETTLED_NS: Final = 2_000_000_000

V = TypeVar("V")


def bytes_in_entry(file: str) -> str:
    """The name under which a file's trash entry keeps its bytes (a new entry's): the file's
    own, but for a file named as the entry's manifest, ``trash.json``, whose bytes went over
    the manifest: the delete (or replace) was acknowledged, `restore --file` found nothing,
    and `check --repair` removed the entry as one "that holds no data" (red team 38). Its
    bytes are kept as ``.trash.json``, a name no file may have (a file name never begins
    with a dot).

    So is a file whose name a filesystem that folds case takes for the manifest's
    (``Trash.json``, ``TRASH.JSON``, ``tra\u017fh.json``: exFAT, FAT, NTFS, APFS, a ``casefold``
    directory), as ``.Trash.json``: on exFAT its delete was answered with its entry, whose
    manifest its bytes had replaced, and the restore was refused (red team 70). An entry
    made before keeps them under the file's name: `entry_bytes` finds either.
    """
    return f".{file}" if _folded(file) == TRASH_MANIFEST else file


def entry_bytes(entry: Path, file: str) -> Path:
    """Where trash entry ``entry`` keeps ``file``'s bytes: `bytes_in_entry`, or, for a name
    that only folds to the manifest's, the file's own name where the entry was made before
    red team 70 (it holds nothing under the new one, and lists that name: on a filesystem
    that folds case, a look at it would find the manifest)."""
    kept = entry / bytes_in_entry(file)
    if file in (TRASH_MANIFEST, kept.name) or lexists(kept):
        return kept
    try:
        listed = [each.name for each in entry.iterdir()]
    except OSError:
        return kept
    return entry / file if file in listed else kept


def _folded(name: str) -> str:
    """``name`` as a filesystem that folds case may compare it (NFC, then `str.casefold`,
    which folds more than any such filesystem: the long s, U+017F, to ``s``)."""
    return unicodedata.normalize("NFC", name).casefold()


class FileRecord(FileEntry):
    """``records/<name>``: a file's entry and the blob that holds its bytes."""

    blob: str


class TrashManifest(TypedDict):
    """``trash.json``: what a trash entry holds, written before anything moves into it."""

    kind: Literal["session", "file"]
    session_id: str
    file: str | None
    deleted_at: str
    reason: str
    title: str | None
    entry: FileEntry | None
    blob: NotRequired[str]  # a file entry: the blob that moves in (`check` finishes a move)
    boot: NotRequired[dict[str, Any]]  # {"id": boot id, "seconds": CLOCK_BOOTTIME} when made
    #: The SHA-256 of its other fields but ``entry`` and ``boot`` (`manifest_sha256`); since
    #: session 67. Named by `CONTENT_KEY`.
    content_sha256: NotRequired[str | None]


def public(record: Mapping[str, Any]) -> FileEntry:
    """A file's entry as the API shows it: the record without its blob name, each field of
    the type the document states (`app.server.models.FileEntry`).

    A record is of the app's shape (`_of_our_shape`) but for its ``uploaded_at``, which no
    check of the bytes reads: one that is not text (a number of seconds, written by a tool
    or a migration) is shown as null, "not known", where it was sent as it was against the
    document's ``string | null`` (red team 59 on the HTTP contract).
    """
    size, uploaded_at = record.get("size"), record.get("uploaded_at")
    return {
        "name": record.get("name"),  # type: ignore[typeddict-item]
        "size": int(size) if isinstance(size, float) and size.is_integer() else size,  # type: ignore[typeddict-item]
        "sha256": record.get("sha256"),
        "uploaded_at": uploaded_at if isinstance(uploaded_at, str) else None,
    }


def shape_damage(path: Path, *, hashed: bool = False) -> tuple[str, str] | None:
    """Why the record at ``path``, a JSON object naming its file and a blob, is not of the
    app's shape (`_of_our_shape`), and what resolves it; ``None`` where it is torn, is no
    record at all, or is the app's (`app data check` says "cannot be read" of those)."""
    try:
        record = load_record(path, shaped=False)  # never through a link, as a read of it
    except OSError:
        return None
    return None if record is None else _shape_fault(record, hashed=hashed)


def listed_entries(listed: list[Any], session_id: str) -> list[FileEntry]:
    """A not yet migrated session's list of files (``session.json``'s ``files``, written
    before records/ and blobs/) as the API shows it: each entry of the app's shape
    (`_of_our_shape`), through `public`. Sent as it was, an entry a tool wrote (a size as
    text, no ``sha256``) broke the document's schema (red team 59 on the HTTP contract).

    One left out is said in the log, as a record is (`_say_left_out`): left out without a
    word, the file was gone from the listing, and the operator was told nothing (red team 59
    on regress, the HTTP contract)."""
    shown = []
    for entry in listed:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str) and _of_our_shape(entry):
            shown.append(public(entry))
            continue
        name = entry.get("name") if isinstance(entry, dict) else entry
        log.warning(
            "session %s: file %r is left out of its files: its entry in session.json's list "
            "(a session written before records/ and blobs/) is not of the app's shape "
            "(damaged or written outside the app); `app data check` names the session, and "
            "its bytes stay in files/",
            session_id,
            name,
        )
    return shown


def open_regular(path: str, flags: int) -> int:
    """``os.open`` for a file of ours: never through a symlink, never blocking on a FIFO."""
    # O_NOFOLLOW: a symlink planted at a file's name is not the session's file.
    # O_NONBLOCK: nor is a FIFO, which must not hang the open (the caller checks S_ISREG).
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)


def moved_changed(held: int, judged: os.stat_result, moved_to: Path) -> str | None:
    """What is not as judged of bytes the app judged through the descriptor ``held``
    (``judged``: its ``fstat`` then) and has just renamed to ``moved_to`` by their old name;
    None where that name holds the very file, neither cut, grown nor written to since.

    A rename goes by name, not by descriptor: another file put at the old name (``mv``, an
    editor's or rsync's save) in between was moved in its place, and a ``cp`` over it wrote
    into the very file, under the SHA-256 of what the app had read or received. A restore
    answered "restored" of bytes it never hashed, and an upload was acknowledged with the
    SHA-256 of bytes the disk did not hold, its own lost (red team 75 on integrity, round
    2). Looked at after the rename, the one moment that decides: a change after this look is
    a change to a file in place, which a download's hash and `app data check` find.
    """
    try:
        there = os.lstat(moved_to)
    except FileNotFoundError:
        return "is gone"
    if (there.st_dev, there.st_ino) != (judged.st_dev, judged.st_ino):
        return "is another file, put at its name"
    now = os.fstat(held)
    if now.st_size != judged.st_size:
        return f"holds {now.st_size} bytes where it held {judged.st_size}"
    if now.st_mtime_ns != judged.st_mtime_ns:
        return "was written to"
    return None


def load_record(path: Path, *, shaped: bool = True, hashed: bool = False) -> FileRecord | None:
    """The record at ``path``, or ``None`` if there is none (or it is not a record of ours).

    ``shaped=False``: one that names its file and a blob, whatever its other fields (a size
    as text, a SHA-256 in capitals), for the app's own bookkeeping of which bytes a record
    names (`record_blob`, a migration's step). Read as "no record", a record of another
    shape (`_of_our_shape`) was taken by `check --repair` for a delete or a replace that
    had committed, and the bytes it names moved to the trash, where `empty-trash` removes
    them; a migration's repeated step wrote a record over it naming bytes not there (red team
    59 on regress, the HTTP contract)."""
    return _load_record(path, shaped=shaped, hashed=hashed)[0]


def record_to_change(
    path: Path, session_id: str, action: str, *, hashed: bool = False
) -> FileRecord | None:
    """The record at ``path`` for a change of (or a read of) its file: ``None`` only where
    nothing is at its name.

    A file or a directory there that the app cannot read as a record is refused
    (:class:`FileRecordUnreadableError`): taken for "no file", a ``PUT`` wrote a new record
    over a torn one, and the acknowledged bytes it named were moved to the trash as an upload
    "never acknowledged" at the next repair (red team 46). A link, a FIFO or a socket holds
    no record of this session's: a write replaces it, never writing through it.
    """
    # What is there is judged by the one open that read it: a look at the name after a read
    # that found nothing (the file deleted by a change under way) met the next change's new
    # record, and a PUT's check before its body was refused as "damaged outside the app" (a
    # race of two clients, seen in red team 30's history test).
    record, opened = _opened_record(path, hashed=hashed)
    if (
        record is None
        and opened is not None
        and (stat.S_ISREG(opened.st_mode) or stat.S_ISDIR(opened.st_mode))
    ):
        if stat.S_ISREG(opened.st_mode) and (held := _folded_twin(path)) is not None:
            raise FileNameFoldedError(session_id, path.name, held, action)
        raise FileRecordUnreadableError(session_id, path.name, action)
    return record


def _folded_twin(path: Path) -> str | None:
    """The name of the session's other file whose record a filesystem that folds case
    found at ``path``: its directory lists that name and not ``path``'s, the two fold
    alike, and the record there is the app's, of that name. None where it is not that (a
    record damaged from outside the app). Looked at only on the way to that refusal."""
    try:
        names = [entry.name for entry in path.parent.iterdir()]
    except OSError:
        return None
    folded = _folded(path.name)
    twins = [name for name in names if name != path.name and _folded(name) == folded]
    if path.name in names or len(twins) != 1:
        return None
    record, _ = _opened_record(path.with_name(twins[0]), shaped=False)
    return twins[0] if record is not None else None


def _load_record(
    path: Path, *, shaped: bool = True, hashed: bool = False
) -> tuple[FileRecord | None, bool]:
    """:func:`load_record`, and whether the file is linked elsewhere too (``st_nlink`` > 1)."""
    record, opened = _opened_record(path, shaped=shaped, hashed=hashed)
    return record, opened is not None and opened.st_nlink > 1


def _opened_record(
    path: Path, *, shaped: bool = True, hashed: bool = False
) -> tuple[FileRecord | None, os.stat_result | None]:
    """The record at ``path`` (None where what is there is none of ours), and what the open
    that read it found there (None where it opened nothing: no name, a link, a socket)."""
    try:
        fd = open_regular(str(path), os.O_RDONLY)
    except OSError as error:
        if error.errno in MISSING_ERRNOS:
            return None, None
        raise
    try:
        info = os.fstat(fd)
        # Checked before a file object is made on it: os.fdopen refuses a directory (made
        # there by hand) with IsADirectoryError, which failed every read of the session.
        if not stat.S_ISREG(info.st_mode):
            return None, info
        # One read of what fstat said, plus one byte: short of that is the end of the file
        # (the second read a file object makes to find it was a system call per record).
        limit = _MAX_RECORD_BYTES + 1
        raw = os.read(fd, min(info.st_size + 1, limit))
        if len(raw) == info.st_size + 1:  # it grew since the fstat: on to its end, or the limit
            while len(raw) < limit and (chunk := os.read(fd, limit - len(raw))):
                raw += chunk
    except OSError as error:
        # A read that fails (EIO) names no file; `app data check` names what it missed.
        if error.errno is not None and error.filename is None:
            error.filename = str(path)
        raise
    finally:
        os.close(fd)
    return _parsed_record(raw, path.name, shaped=shaped, hashed=hashed), info


def _parsed_record(
    raw: bytes, name: str, *, shaped: bool = True, hashed: bool = False
) -> FileRecord | None:
    try:
        record = json_loads(raw)
    except ValueError:
        return None
    if (
        not isinstance(record, dict)
        or record.get("name") != name
        or not isinstance(record.get("blob"), str)
        or not ID_RE.fullmatch(record["blob"])
        or (shaped and not _of_our_shape(record, hashed=hashed))
    ):
        return None
    return cast(FileRecord, record)  # what the code relies on, name, blob and types, checked


_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}", re.ASCII)
# A control character (Unicode's Cc), which no request can name (the server refuses it in
# any path), nor any build of the app stored (`check_stored_name`).
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _of_our_shape(record: Mapping[str, Any], *, hashed: bool = False) -> bool:
    """Whether a record's fields are of the kinds the app writes, the ones a download checks
    and the API shows: a size (a whole number, not negative), a SHA-256 (64 lower-case hex
    digits, or null where a build before hashes had none), and a name a request can name.

    A record written by a tool (``"size": "11"``, ``-1``, ``true``, ``"sha256": 7``), or a
    name stored in another Unicode form than NFC (copied through macOS) or holding a control
    character, was listed as it was: a page against the document's own schema (a string
    where it says integer), a download a 500 ``internal_error`` (the ETag's digest of a
    SHA-256 that is no hex) or a "damaged" refusal, and a listed name every request for
    answered "no such file" or "invalid path" (red team 59 on the HTTP contract). Such a
    record is none of the app's: left out of its session's files with a warning, refused by
    name (`record_to_change`), reported by `app data check` (``unknown-entry``), with the
    bytes it names kept.
    """
    return _shape_fault(record, hashed=hashed) is None


def shape_fault(record: Mapping[str, Any], *, hashed: bool = False) -> str | None:
    """What makes a file's record (or, on PostgreSQL, its row: `app.remote.rows`) not of
    the app's shape, in words; ``None`` where it is of the app's shape. ``hashed``: its
    root requires every record's `CONTENT_KEY` (`app.dataroot.HASHED_KEY`)."""
    fault = _shape_fault(record, hashed=hashed)
    return None if fault is None else fault[0]


def _shape_fault(record: Mapping[str, Any], *, hashed: bool = False) -> tuple[str, str] | None:
    """What makes a record (one naming its file and a blob) not of the app's shape
    (`_of_our_shape`), and what resolves it; ``None`` where it is of the app's shape."""
    backup = "put the record back from a backup (a tool or an edit wrote it)"
    size, sha256, name = record.get("size"), record.get("sha256"), record["name"]
    if (
        isinstance(size, bool)
        or not isinstance(size, int | float)
        or size < 0
        or (isinstance(size, float) and not size.is_integer())
    ):
        return f"its size is {size!r}, not a whole number of bytes", backup
    if sha256 is not None and not (isinstance(sha256, str) and _SHA256_HEX.fullmatch(sha256)):
        return f"its sha256 is {str(sha256)[:80]!r}, not 64 lower-case hex digits", backup
    if _CONTROL.search(name):
        return "its name holds a control character, which no request can name", backup
    if CONTENT_KEY in record and record[CONTENT_KEY] != record_sha256_or_none(record):
        fault: str | None = RECORD_CHANGED
    else:
        # Read as "written before keys", a record whose line was removed was served as
        # acknowledged, whatever else the edit changed (rows67).
        fault = RECORD_UNKEYED if hashed and CONTENT_KEY not in record else None
    if fault is not None:
        return fault, f"put the record back from a backup; {REHASH}"
    if unicodedata.is_normalized("NFC", name):
        return None
    nfc = unicodedata.normalize("NFC", name)
    return (
        f"its name is not in NFC, the form every request's name is taken in ({nfc!r})",
        (
            f"with no server on the root, rename the record to {nfc!r} and set its name so, if "
            "no file has that name"
        ),
    )


#: What resolves a record's or a session.json's missing or changed `CONTENT_KEY` after an
#: edit made on purpose: in a root whose stamp requires keys, removing the line is refused as
#: damage too (`RECORD_UNKEYED`); the repair hashes what has none, then marks the root again.
REHASH: Final = (
    f"after an edit made on purpose, remove its {CONTENT_KEY} line, and, with no server on "
    "the root, the content_sha256_since line of the root's stamp (.app-profile.json), then "
    "run `app data check --repair`, which hashes it again"
)
#: `REHASH` of a trash manifest's ``entry`` (the record of the version a file's entry holds):
#: removing its line alone is refused in a marked root (`entry_changed`), and the repair
#: keys an entry without one (red team 67 on regress).
ENTRY_REHASH: Final = (
    f"after an edit made on purpose, remove the {CONTENT_KEY} line of its entry, and, with no "
    "server on the root, the content_sha256_since line of the root's stamp (.app-profile.json), "
    "then run `app data check --repair`, which hashes it again"
)
#: What a record's fault says of one without `CONTENT_KEY` in a root that requires it.
RECORD_UNKEYED: Final = (
    f"it has no {CONTENT_KEY}, which every record of this data root (on PostgreSQL, every "
    "file's row of this database) carries since its stamp's content_sha256_since (one "
    "removed outside the app, read unchecked, would be served as acknowledged)"
)
#: What a record's fault (`shape_fault`) says of a record whose acknowledged fields changed.
RECORD_CHANGED: Final = (
    "its name, size, sha256 or uploaded_at is not what its upload acknowledged (their "
    "SHA-256 is no longer the content_sha256 written with them)"
)
#: A file's fields its upload (or restore) acknowledged, which a record's `CONTENT_KEY` keeps
#: the SHA-256 of (`record_sha256`); its blob is where the bytes are, no part of an answer.
_RECORD_FIELDS: Final = ("name", "size", "sha256", "uploaded_at")


def record_sha256(record: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of a file's name, size, SHA-256 and upload time, as one compact JSON
    array, which its record keeps under `CONTENT_KEY` (as ``session.json`` keeps the
    session's, `content_sha256`).

    A record's ``size`` and ``sha256`` are compared with its bytes by every download and by
    `app data check`, its name with the record's own; its ``uploaded_at`` by nothing. One bit
    of it flipped on the disk (``2026`` made ``2036``) was every listing's and the session's
    ``updated_at``, the session's next upload was dated after it (the damage written into a
    new record), and `app data check` said clean (red team 66 on regress, rt-regress66b), the
    class rt-regress65d closed for ``session.json``. Of the parsed values, as there; raises
    ``ValueError`` for a NaN (which no upload writes)."""
    canonical = _RECORD_JSON.encode([record.get(key) for key in _RECORD_FIELDS])
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


#: `record_sha256`'s encoder, made once: `json.dumps` with these arguments makes one per call,
#: a quarter of the hash's CPU time (a record is hashed on every read of it from the disk).
_RECORD_JSON: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def record_sha256_or_none(record: Mapping[str, Any]) -> str | None:
    """`record_sha256`, or ``None`` where its fields cannot be hashed (a NaN)."""
    # Nothing an upload writes makes it raise: a record that does is no acknowledged one.
    try:
        return record_sha256(record)
    except (ValueError, RecursionError):
        return None


def keyed_record(record: Mapping[str, Any]) -> FileRecord:
    """``record`` as the app writes it: with `CONTENT_KEY`, the SHA-256 of its acknowledged
    fields (`record_sha256`), computed again (a record read and written on keeps no key of
    other values). Where they cannot be hashed (a NaN a build before hashes wrote in the list
    the migration reads), without it, read unchecked as every record written before."""
    fields = {k: v for k, v in record.items() if k != CONTENT_KEY}
    key = record_sha256_or_none(fields)
    if key is not None:
        fields[CONTENT_KEY] = key
    return cast(FileRecord, fields)


def trashed_entry(record: Mapping[str, Any]) -> FileEntry:
    """What a trash entry's manifest keeps of the record of the version it holds: `public`,
    with the record's `CONTENT_KEY` where it has one. A restore writes the record back from
    these fields: without the key, an ``uploaded_at`` changed in ``trash.json`` was restored
    under a key computed for it, as acknowledged (rt-regress66b)."""
    entry = public(record)
    kept = record.get(CONTENT_KEY)
    if isinstance(kept, str):
        return cast(FileEntry, {**entry, CONTENT_KEY: kept})
    return entry


def entry_changed(entry: Mapping[str, Any], *, hashed: bool = False) -> bool:
    """Whether a trash manifest's entry (`trashed_entry`) keeps a `CONTENT_KEY` that is not
    the SHA-256 of its fields: one without it (a manifest written before) is not known, but
    where its root requires keys (``hashed``)."""
    return entry_fault(entry, hashed=hashed) is not None


def entry_fault(entry: Mapping[str, Any], *, hashed: bool = False) -> str | None:
    """What `entry_changed` finds, as the words after "a trash.json whose": that the entry
    has no key where the root requires one, or that its fields are not those of its key;
    ``None`` where it finds nothing. "Not what its upload acknowledged" was said of an entry
    that merely had no key (red team 67 on regress)."""
    if CONTENT_KEY not in entry:
        if not (hashed and entry):  # none at all: no version acknowledged (an orphan's)
            return None
        return (
            f"entry has no {CONTENT_KEY}, which every one of this data root carries since "
            "its stamp's content_sha256_since"
        )
    if entry[CONTENT_KEY] == record_sha256_or_none(entry):
        return None
    return RECORD_CHANGED.removeprefix("its ")


#: What a trash entry's delete wrote of it in ``trash.json``, which its `CONTENT_KEY` keeps
#: the SHA-256 of (`manifest_sha256`): the version's own record (``entry``) keeps its own.
_MANIFEST_FIELDS: Final = ("kind", "session_id", "file", "deleted_at", "reason", "title", "blob")


#: What is wrong with a trash manifest `manifest_changed` finds.
MANIFEST_CHANGED: Final = (
    f"its {CONTENT_KEY} is not the SHA-256 of its fields, or it has none where the root's "
    "stamp says every one does (content_sha256_since)"
)


def manifest_sha256(manifest: Mapping[str, Any]) -> str | None:
    """The SHA-256 (hex) of a trash manifest's kind, session, file, time, reason, title and
    blob, as one compact JSON array, which ``trash.json`` keeps under `CONTENT_KEY`; ``None``
    where no delete could have written them (a NaN). Left out, a session's title changed in
    its entry's trash.json was listed by `app sessions list --trash` as the title it had
    when it was deleted (rows67)."""
    try:
        canonical = _RECORD_JSON.encode([manifest.get(key) for key in _MANIFEST_FIELDS])
    except (ValueError, RecursionError):
        return None
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def manifest_changed(manifest: Mapping[str, Any], *, hashed: bool = False) -> bool:
    """Whether a trash manifest is not what its delete wrote: it keeps a `CONTENT_KEY` that
    is not `manifest_sha256` of its fields, or none where its root requires one
    (``hashed``; one written by an earlier build, in a root not marked so, is not known)."""
    if CONTENT_KEY not in manifest:
        return hashed
    return bool(manifest[CONTENT_KEY] != manifest_sha256(manifest))


def record_blob(path: Path) -> str | None:
    """The blob a record names now, ``None`` if there is no record (of ours) there: one of
    another shape than the app writes (`_of_our_shape`) names its blob all the same.

    A read that fails for another reason (EMFILE, EIO) raises: "no record" would tell
    `check` that a switch happened, and it would move the file's own bytes to the trash.
    """
    record = load_record(path, shaped=False)
    return None if record is None else str(record["blob"])


def scan_records(directory: Path, *, hashed: bool = False) -> list[FileRecord]:
    """Every record of the session in ``directory``, oldest upload first."""
    return scan_records_linked(directory, hashed=hashed)[0]


def scan_records_linked(directory: Path, *, hashed: bool = False) -> tuple[list[FileRecord], bool]:
    """:func:`scan_records`, and whether one of the records is linked elsewhere too: a write
    through the other name raises no event on records/ (`app.store.watch`)."""
    records_dir = directory / RECORDS_DIR
    if records_dir.is_symlink():
        raise _records_damaged(directory, "is a symbolic link, not the app's directory")
    try:
        with os.scandir(records_dir) as entries:
            names = [e.name for e in entries if not e.name.startswith(".")]
    except FileNotFoundError:
        return [], False  # no upload yet
    except NotADirectoryError:
        # Read as "no files", a state the session never had (red team 36).
        raise _records_damaged(directory, "is not a directory") from None
    records = []
    linked = False
    for name in names:
        record, more = _load_record(records_dir / name, hashed=hashed)
        linked |= more
        if record is not None:
            records.append(record)
        else:
            _say_left_out(records_dir / name, directory.name)
    records.sort(key=upload_order)
    return records, linked


def _say_left_out(path: Path, session_id: str) -> None:
    # A record that cannot be read is left out of the session's files; a read or a change
    # of its name is refused (`record_to_change`). Left out without a word, a client saw the
    # file gone, and so did the operator (red team 46).
    # One of another shape (`shape_damage`) is named so, with what resolves it: "cannot be
    # read" sent the operator after a torn file in a record that reads well (red team 59 on
    # regress, the HTTP contract).
    with contextlib.suppress(OSError):
        mode = os.lstat(path).st_mode
        if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
            shape = shape_damage(path) if stat.S_ISREG(mode) else None
            log.warning(
                "session %s: file %r is left out of its files: its record %s %s; reads and "
                "changes of it are refused (file_record_unreadable), and `app data check` "
                "names the bytes beside it%s",
                session_id,
                path.name,
                path,
                "cannot be read (damaged or replaced outside the app)"
                if shape is None
                else f"is of another shape than the app writes ({shape[0]})",
                "" if shape is None else f"; to resolve it, {shape[1]}",
            )


def _records_damaged(directory: Path, damage: str) -> UnreadableSessionError:
    return UnreadableSessionError(
        session_id=directory.name, damage=damage, file="records/", finding="unknown-entry"
    )


def upload_order(record: FileRecord) -> tuple[str, str]:
    return str(record.get("uploaded_at") or ""), record["name"]


def read_meta(directory: Path, session_id: str, *, hashed: bool = False) -> dict[str, Any]:
    """``session.json`` as on disk: whether the session exists, without reading its files."""
    if directory.is_symlink():
        # Not one of ours (a create renames a real directory): it could lead anywhere.
        raise SessionNotFoundError(session_id)
    try:
        raw = read_regular(directory / SESSION_FILE)
    except (FileNotFoundError, NotADirectoryError, NotRegularFileError):
        # A session.json that is no file is no session, as MetaCache.stat says too.
        raise SessionNotFoundError(session_id) from None
    return session_object(raw, session_id, hashed=hashed)


#: What `UnreadableSessionError` says of a session.json whose acknowledged content changed.
CONTENT_CHANGED: Final = (
    "holds a title, metadata, id, creation or update time other than those its create "
    "acknowledged "
    f"(their SHA-256 is no longer the {CONTENT_KEY} written with them; {REHASH})"
)
#: What `UnreadableSessionError` says of a session.json without `CONTENT_KEY` in a root that
#: requires it (`app.dataroot.HASHED_KEY`).
CONTENT_MISSING: Final = (
    f"has no {CONTENT_KEY}, which every session.json of this data root carries since its "
    "stamp's content_sha256_since (after an edit made on purpose, remove the "
    "content_sha256_since line of the root's stamp, .app-profile.json, with no server on the "
    "root, then run `app data check --repair`, which hashes the session again)"
)
#: What `UnreadableSessionError` says of a session.json's key no build of the app writes,
#: after the key.
UNKNOWN_KEY: Final = (
    "which no build of the app writes (after an edit made on purpose, remove that key)"
)
#: What a create acknowledges of a session, and the key holds the SHA-256 of: never changed
#: once written. ``updated_at`` too where it is not ``created_at`` (`content_sha256`).
_CONTENT_FIELDS: Final = ("id", "title", "metadata", "created_at")

#: What the app writes in ``session.json``, by type: another type there is not ours.
_SESSION_FIELDS: Final = {
    "id": (str,),
    "title": (str, type(None)),
    "metadata": (dict,),
    "created_at": (str,),
    "updated_at": (str,),
    CONTENT_KEY: (str,),
}

#: Every key a build of the app ever wrote in ``session.json`` (``files``: before records/).
_KNOWN_KEYS: Final = frozenset({*_SESSION_FIELDS, LEGACY_FILES_KEY})


def content_sha256(session: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of a session's id, title, metadata and creation time, as one
    compact JSON array (keys sorted), which ``session.json`` keeps under `CONTENT_KEY`.

    A file's bytes have their SHA-256 in its record, checked by every download and by `app
    data check`; a session's title and metadata had none, and a bit flipped on the disk
    (``"sENT"`` for ``"sent"``, ``7`` for ``1``), or an edit, was served as what its create
    acknowledged, and `app data check` found nothing (red team 65). Of the parsed values,
    not of the file's text: its layout (indentation, key order) is no part of what was
    acknowledged, and JSON's values come back from the file as they went in (numbers
    included: a create keeps only those a double holds exactly).

    And ``updated_at``, where it is not ``created_at``, in a session.json without the list
    of files of the layout before records/: a create writes the two equal, and nothing
    rewrites them but the legacy migration, which keeps the ``updated_at`` a build from
    before records/ gave the session (a downgrade: that build dated its uploads there, the
    key kept beside the list, of the four fields) and drops the list, hashed then with it.
    Left out, one bit of it flipped on the disk (2026 made 2036) was every answer's
    ``updated_at``, the next upload's record dated after it, `app data check` clean (red
    team 65 on regress, rt-regress65d). Appended only where the two differ, so the key of
    every session.json written before is still the same.
    """
    values = [session.get(key) for key in _CONTENT_FIELDS]
    updated = session.get("updated_at")
    if updated not in (None, session.get("created_at")) and LEGACY_FILES_KEY not in session:
        values.append(updated)
    canonical = json.dumps(
        values,
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def content_sha256_or_none(session: Mapping[str, Any]) -> str | None:
    """`content_sha256`, or ``None`` where no create could have written these values: the
    remote backend's rows are compared with it too (`app.remote.rows.content_fault`)."""
    # A NaN or an Infinity in the file (which json.loads reads, and no create writes), or
    # nesting too deep to encode: not what was acknowledged, so no hash matches it.
    try:
        return content_sha256(session)
    except (ValueError, RecursionError):
        return None


def session_object(
    raw: bytes, session_id: str, *, checked: bool = False, hashed: bool = False
) -> dict[str, Any]:
    """``session.json``'s content, parsed: a JSON object whose fields have the types the app
    writes, else `UnreadableSessionError` (a number in ``updated_at`` once failed every page
    that held a session with files); whose id, title, metadata, creation time (and update
    time, `content_sha256`) are those its create acknowledged where it keeps their SHA-256
    (`CONTENT_KEY`: a session made before red team 65 has none), else
    `UnreadableSessionError` too. The key is not returned. ``checked``: these bytes were
    compared so already (kept by `MetaCache` only once they were), and are not again: a read
    of a kept session.json costs no hash. ``hashed``: its root requires the key
    (`app.dataroot.HASHED_KEY`), and one without it is `UnreadableSessionError` too."""
    try:
        session = json_loads(raw)
    except ValueError:
        session = None
    if not isinstance(session, dict):
        raise UnreadableSessionError(session_id=session_id, damage="is not a JSON object")
    for key, types in _SESSION_FIELDS.items():
        if key in session and not isinstance(session[key], types):
            damage = f"has a {type(session[key]).__name__} in {key!r}, which the app never writes"
            raise UnreadableSessionError(session_id=session_id, damage=damage)
    if session.get("id", session_id) != session_id:
        # Another session's (linked, or copied, by hand): that session was answered in this
        # one's place, listed twice, and this one's own was hidden (red team 44).
        damage = f"names session {session['id']}, not this one (another session's file)"
        raise UnreadableSessionError(session_id=session_id, damage=damage)
    if not _KNOWN_KEYS.issuperset(session):
        # No build of the app ever wrote another key. One bit of `CONTENT_KEY`'s name
        # flipped ("content_sha257") made the file one "without it", read unchecked, and the
        # hash, never part of an answer, was served under its new name; a title damaged
        # after that was served as acknowledged (red team 65 on regress).
        unknown = min(set(session) - _KNOWN_KEYS)
        shown = repr(unknown if len(unknown) <= 64 else unknown[:64] + "...")
        damage = f"has the key {shown}, {UNKNOWN_KEY}"
        raise UnreadableSessionError(session_id=session_id, damage=damage)
    kept = session.pop(CONTENT_KEY, None)
    if kept is not None and not checked and kept != content_sha256_or_none(session):
        raise UnreadableSessionError(session_id=session_id, damage=CONTENT_CHANGED)
    if kept is None and hashed:
        # Read as "made before red team 65", a file whose line was removed by an edit was
        # served as acknowledged, whatever the edit changed (rows67).
        raise UnreadableSessionError(session_id=session_id, damage=CONTENT_MISSING)
    # The fields the document says every session has: a session.json written by a tool or
    # an earlier build without one (or with a null title) was answered without it, against
    # the schema (red team 59 on the HTTP contract). The id is its directory's; no title and
    # no metadata are what `POST /sessions` gives a session created without them. No time
    # of its creation is known: that is damage, refused as the others are.
    if not isinstance(session.get("created_at"), str):
        damage = "has no 'created_at', which the app always writes"
        raise UnreadableSessionError(session_id=session_id, damage=damage)
    session["id"] = session_id
    if session.get("title") is None:
        session["title"] = ""
    session.setdefault("metadata", {})
    return session


class ValidatedCache(Generic[V]):
    """Values each kept under a validator, LRU, bounded by the bytes they hold.

    A value is returned only to a caller that presents the validator it was stored with:
    the caller computes the validator from what decides freshness (a file's stat, a
    generation count), so a changed source is never answered from here.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[object, V, int]] = OrderedDict()
        self._held = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str, validator: object) -> V | None:
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry[0] != validator:
                return None
            self._entries.move_to_end(name)
            return entry[1]

    def put(self, name: str, validator: object, value: V, size: int) -> None:
        with self._lock:
            old = self._entries.pop(name, None)
            self._held -= 0 if old is None else old[2]
            if size > self.limit:
                return
            self._held += size
            self._entries[name] = (validator, value, size)
            while self._held > self.limit:
                _, (_, _, evicted) = self._entries.popitem(last=False)
                self._held -= evicted


class MetaCache:
    """The bytes of recently read ``session.json`` files, each valid while its stat is unchanged.

    A page of 100 sessions read each file whole (open, fstat, read, close); with this, a
    file read before costs one ``stat``. An entry is used only while the file's device,
    inode, size, mtime and ctime (its :meth:`stat` key) are all as they were when it was
    read, so any change to the file, by this process or any other, is read afresh; files
    changed in the last two seconds are not kept (see ``_SETTLED_NS``, :meth:`settled`).
    Bounded by the bytes it holds (LRU).
    """

    def __init__(
        self, limit: int = _META_CACHE_BYTES, settled_ns: int = _SETTLED_NS, *, hashed: bool = False
    ) -> None:
        self.settled_ns = settled_ns
        self.hashed = hashed  # the root requires every session.json's key (`session_object`)
        self._files: ValidatedCache[bytes] = ValidatedCache(limit)

    def stat(self, directory: str, session_id: str) -> tuple[int, ...]:
        """The key of ``directory``'s session.json: device, inode, size, mtime, ctime.

        Raises SessionNotFoundError where :func:`read_meta` would find no session.
        """
        try:
            is_link = stat.S_ISLNK(os.lstat(directory).st_mode)
            info = os.stat(f"{directory}/{SESSION_FILE}")  # noqa: PTH116 (no Path: see _read)
        except (FileNotFoundError, NotADirectoryError):
            raise SessionNotFoundError(session_id) from None
        # Not one of ours: a symlinked directory could lead anywhere (as in read_meta), and
        # opening a FIFO would wait for a writer, on the server's event loop.
        if is_link or not stat.S_ISREG(info.st_mode):
            raise SessionNotFoundError(session_id)
        return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)

    def settled(self, key: tuple[int, ...]) -> bool:
        """Whether a file with this :meth:`stat` key may be kept: its ctime is old enough."""
        return time.time_ns() - key[4] > self.settled_ns

    def read(self, directory: str, session_id: str) -> dict[str, Any]:
        """:func:`read_meta`, for the session directory ``directory`` (a string path)."""
        key = self.stat(directory, session_id)
        raw = self._files.get(directory, key)
        if raw is not None:
            return session_object(raw, session_id, checked=True)
        raw, kept = self._load(directory, session_id, key)
        session = session_object(raw, session_id, hashed=self.hashed)  # checked, then kept
        if kept:
            self._files.put(directory, key, raw, len(raw))
        return session

    def _load(self, directory: str, session_id: str, key: tuple[int, ...]) -> tuple[bytes, bool]:
        """session.json's bytes, and whether they may be kept under ``key``."""
        try:
            fd = os.open(f"{directory}/{SESSION_FILE}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise SessionNotFoundError(session_id) from None
        # os.read, not a file object: opening one costs two more fstat, an ioctl and two
        # lseek per read, on every get, page and delete of a session not kept yet.
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):  # swapped for a FIFO or a directory since `stat`
                raise SessionNotFoundError(session_id)
            chunks = [os.read(fd, info.st_size + 1)]
            while chunks[-1]:  # the file grew since the fstat: read to its end
                chunks.append(os.read(fd, 65536))
        finally:
            os.close(fd)
        raw = b"".join(chunks)
        opened = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        return raw, opened == key and self.settled(opened)


def ensure_dir(directory: Path, name: str) -> Path:
    """``directory / name``, made (durably) if it is not there yet."""
    path = directory / name
    if not path.is_dir():
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        fsync_dir(directory)
    return path


def refuse_linked_dirs(root: Path, directory: Path, names: tuple[str, ...]) -> None:
    """Refuse a session whose ``names`` (its ``records/``, ``blobs/``, legacy ``files/``) are
    not real directories.

    A symbolic link there (planted by hand: the app never makes one) would lead a delete, a
    replace, a restore or a migration into whatever it points at, another data root
    included: an ``unlink`` or a ``rename`` follows every directory in its path, and only
    the last component is the session's own.
    """
    for name in names:
        path = directory / name
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue  # made by the first upload
        if not stat.S_ISDIR(mode):
            raise DataRootChangedError(
                root,
                f"{path} is a symbolic link or another non-directory where the session "
                "keeps its files, so nothing in this session is changed through it",
            )
