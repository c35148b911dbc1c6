"""The rule a file's row in ``app_files`` follows to be the app's: the local store's rule for
a file's record (`app.store.records.shape_fault`: a size that is a whole number of bytes, a
SHA-256 of 64 lower-case hex digits, a name in NFC without a control character) and a name
a request can name (`app.names.check_file_name`).

The table's columns take any text and any ``bigint``. A row a tool wrote (a SHA-256 in
capitals or no hex, a negative size, a name in NFD or holding a ``/``, an object's name the
app never makes) was listed as it was:
a download was a 500 ``internal_error`` (the digest of a SHA-256 that is no hex) or was cut
before its last byte, a name every request answered "no such file" for, and `app data
check` called the bytes "overwritten outside the app" where only the row's text was not the
app's (red team 60 on the remote backend). Such a row is none of the app's, as on a data
root: left out of its session's files with a warning in the log, refused by name
(`FileRowOfAnotherShapeError`), reported by `app data check` (``row-of-another-shape``),
its object kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
from collections.abc import Mapping
from typing import Any, Final

from app.errors import InvalidNameError
from app.names import check_file_name
from app.remote.objects import BLOBS, ObjectStore
from app.store.records import CONTENT_KEY, content_sha256_or_none, shape_fault

__all__ = [
    "CONTENT_CHANGED",
    "CONTENT_FINDING",
    "CONTENT_MISSING",
    "FINDING",
    "SESSION_ROW",
    "UPDATED_CHANGED",
    "UPDATED_KEY",
    "content_fault",
    "content_sha256",
    "row_fault",
    "say_left_out",
    "session_fault",
    "updated_fault",
    "updated_sha256",
]

log = logging.getLogger("app.remote.store")

#: What `app data check` calls such a row.
FINDING = "row-of-another-shape"

#: A session's row, as `UnreadableSessionError` names what is damaged.
SESSION_ROW = "row in app_sessions"

#: What `app data check` calls a session's row whose acknowledged content changed: the
#: local store's name for a session.json whose content changed (`app.check`).
CONTENT_FINDING = "session-unreadable"
#: What `UnreadableSessionError` says of such a row: the local store's words
#: (`app.store.records.CONTENT_CHANGED`), of a column rather than a line, and without the
#: update time, which every upload and restore of the session rewrites here.
CONTENT_CHANGED: Final = (
    "holds a title, metadata, id or creation time other than those its create acknowledged "
    f"(their SHA-256 is no longer the {CONTENT_KEY} written with them; after an edit made "
    "on purpose, set that column and app_stamp.content_sha256_since to NULL with every "
    "replica stopped, then run `app data check --repair`, which hashes the row again and "
    "marks the stamp)"
)

#: What `UnreadableSessionError` says of a session's row without ``content_sha256`` in a
#: database whose stamp requires it.
CONTENT_MISSING: Final = (
    f"has no {CONTENT_KEY}, which every session's row of this database keeps since its "
    "app_stamp's content_sha256_since (after an edit made on purpose, set "
    "app_stamp.content_sha256_since to NULL with every replica stopped, then run `app data "
    "check --repair`, which hashes the row again and marks the stamp)"
)

#: The values of a session's row its ``content_sha256`` is of, as the local store's
#: ``session.json`` has them: the creation time as `app.remote.db.utc` gives it.
_CONTENT_COLUMNS: Final = ("id", "title", "metadata", "created_at")


def content_sha256(row: Mapping[str, Any]) -> str:
    """The SHA-256 a create writes in a session's row (its ``content_sha256`` column): the
    local store's `app.store.records.content_sha256` of the row's id, title, metadata and
    creation time, one definition for both backends.

    Not of ``updated_at``, which the local store's hash takes where it differs from the
    creation time: here each upload, delete of a file and restore of the session sets it
    (`app.remote.db.Database.change`), and a create writes the two equal, so the four
    values are the hash of a session.json the same create would have written."""
    value = content_sha256_or_none({key: row.get(key) for key in _CONTENT_COLUMNS})
    if value is None:  # checked_session_fields refuses what no hash can be made of
        raise ValueError(f"session {row.get('id')}: no SHA-256 of its content can be made")
    return value


def content_fault(row: Mapping[str, Any], *, hashed: bool = False) -> str | None:
    """`CONTENT_CHANGED` where a session's row keeps a ``content_sha256`` (every row a
    create wrote since session 66) that is not that of its id, title, metadata and creation
    time; ``None`` otherwise, and for a row from before, which has none and is read as it
    was, as the local store reads a session.json without the key.

    A title or metadata changed in the database (a DBA's ``UPDATE``, a page damaged on a
    cluster without ``data_checksums``) was served as what its create acknowledged, while
    a data root's session.json so changed was refused (red team 65; session 66)."""
    kept = row.get(CONTENT_KEY)
    if kept is None:
        # Where the stamp requires it (``hashed``: `app.remote.pg.content_sha256_since`), a
        # row without one is damage: read unchecked, a NULL set by an edit served whatever
        # else it changed as acknowledged (rows67).
        return CONTENT_MISSING if hashed else None
    values = {key: row.get(key) for key in _CONTENT_COLUMNS}
    return None if kept == content_sha256_or_none(values) else CONTENT_CHANGED


#: The key of a session's row that holds `updated_sha256`.
UPDATED_KEY: Final = "updated_sha256"
#: What `UnreadableSessionError` says of a row whose ``updated_at`` is not the one written.
UPDATED_CHANGED: Final = (
    f"holds an updated_at other than the one its last change wrote (its SHA-256 is no longer "
    f"the {UPDATED_KEY} written with it, or it has none, which every row of this database "
    "keeps since its app_stamp's content_sha256_since)"
)


def updated_sha256(session_id: str, updated_at: str) -> str:
    """The SHA-256 (hex) of a session's id and ``updated_at`` (as `app.remote.db.utc` reads
    it back), one compact JSON array, which each write that sets the time writes with it:
    a create, a change of its files (`app.remote.db.Database.change`), a restore. Not in
    `content_sha256`, whose values no write changes: recomputing that one at each upload
    would read the metadata back, and trust it, to hash it again (rows67)."""
    canonical = json.dumps([session_id, updated_at], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def updated_fault(row: Mapping[str, Any], *, hashed: bool) -> str | None:
    """`UPDATED_CHANGED` where the database is marked (``hashed``: before, a replica of an
    earlier build serving beside this one's sets ``updated_at`` without the key) and the
    row's ``updated_at`` is not the one its key was written with, or it has none; ``None``
    otherwise, and for a query that did not read the key."""
    if not hashed or UPDATED_KEY not in row:
        return None
    kept, updated = row[UPDATED_KEY], row.get("updated_at")
    if isinstance(updated, str) and kept == updated_sha256(str(row.get("id")), updated):
        return None
    return UPDATED_CHANGED


def session_fault(metadata: Any) -> str | None:
    """Why a session's row is not of the app's shape, or ``None``: its ``metadata`` (a
    ``json`` column, which takes any JSON) is not an object.

    A tool's ``null``, ``[1, 2]`` or ``"text"`` there was answered as it was, against the
    document's schema (``metadata``: an object), where a data root's ``session.json`` of
    that shape is refused as unreadable and left out of pages (red team 60)."""
    if isinstance(metadata, dict):
        return None
    kind = "null" if metadata is None else type(metadata).__name__
    return f"has a {kind} in 'metadata', which the app never writes"


def row_fault(row: Mapping[str, Any], *, hashed: bool = False) -> str | None:
    """Why a file's row (``name``, ``size``, ``sha256``, and ``blob`` where given) is not of
    the app's shape, in words; ``None`` where it is the app's.

    ``blob``: a row naming another key than one the app makes (``blobs//<hex>``, which
    SeaweedFS stores as ``blobs/<hex>``, another file's object; the prefix's stamp
    ``.app-profile.json``) was served that key's bytes, and `app data empty-trash` deleted
    that key once the row was in the trash: another file's acknowledged bytes, or the
    prefix's stamp (red team 60)."""
    name = row.get("name")
    if not isinstance(name, str):
        return f"its name is {name!r}, not text"
    blob = row.get("blob", BLOBS + "0" * 32)
    if not (isinstance(blob, str) and ObjectStore.is_blob_name(blob)):
        shown = str(blob)[:80]
        return f"its object's name {shown!r} is not one the app makes ({BLOBS}<32 hex digits>)"
    # Its content_sha256 (since session 67, a local record's `record_sha256` of its name,
    # size, SHA-256 and upload time as `db.utc` reads it: ``uploaded_iso`` where the query
    # reads the time as a timestamp too); NULL, a row from before, read unchecked unless the
    # stamp requires it (``hashed``; only a query that reads the column passes it).
    # Compared last: a tool's row of another shape is named by what is not the app's.
    record = {key: value for key, value in row.items() if key != CONTENT_KEY}
    if "uploaded_iso" in row:
        record["uploaded_at"] = row["uploaded_iso"]
    fault = shape_fault(record)
    if fault is not None:
        return fault
    try:
        check_file_name(_known(name))
    except InvalidNameError as error:
        return f"its name is not one a request can name ({error.problem})"
    if row.get(CONTENT_KEY) is not None:
        record[CONTENT_KEY] = row[CONTENT_KEY]
    return shape_fault(record, hashed=hashed)


def _known(name: str) -> str:
    """``name`` with each code point this Python's Unicode tables do not assign (category
    ``Cn``) read as a letter of as many bytes.

    A replica on a newer Python (3.12's Unicode 15, 3.14's 16) takes a name with a character
    of that version (U+1FA75, LIGHT BLUE HEART, is Unicode 15): on one of 3.11 the
    row was left out of its session's files, its read refused, and `app data check` called
    it one "a tool or an edit wrote" for a human to correct (red team 60 on regress). The
    data root's rule for a stored name (`app.names.check_stored_name`) judges no category
    either. A name this Python cannot judge is taken as its writer's; a request for it here
    is still refused by `check_file_name`, naming the code point it does not know.

    A noncharacter (U+FDD0 to U+FDEF, and U+FFFE and U+FFFF of every plane) is ``Cn`` in
    every version, so no writer's rule takes it: one was taken as a newer version's, and a
    tool's row so named served, where `app data check` named it (red team 60 on regress,
    the late merges). It is judged as before."""
    if all(not _unknown(char) for char in name):
        return name
    return "".join(
        _LETTER_OF_BYTES[len(char.encode(errors="surrogatepass"))] if _unknown(char) else char
        for char in name
    )


def _unknown(char: str) -> bool:
    """Whether `char` is a code point a later Unicode may assign: ``Cn`` here, not a
    noncharacter, which no version assigns."""
    point = ord(char)
    noncharacter = 0xFDD0 <= point <= 0xFDEF or point & 0xFFFE == 0xFFFE
    return not noncharacter and unicodedata.category(char) == "Cn"


#: A letter no mark composes with, by its length in UTF-8: the name keeps its length.
_LETTER_OF_BYTES: Final = {1: "x", 2: "\u00df", 3: "\u4e00", 4: "\U00020000"}


def say_left_out(session_id: str, name: Any, fault: str) -> None:
    """Say in the log that a file's row is left out of its session's files, and why."""
    log.warning(
        "session %s: file %r is left out of its files: its row in app_files is of another "
        "shape than the app writes (%s: a tool or an edit wrote it); reads of it are refused "
        "(file_record_unreadable), its object is kept, and `app data check` names the row and "
        "its object (%s)",
        session_id,
        name,
        fault,
        FINDING,
    )
