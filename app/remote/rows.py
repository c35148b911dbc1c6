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

import logging
import unicodedata
from collections.abc import Mapping
from typing import Any, Final

from app.errors import InvalidNameError
from app.names import check_file_name
from app.remote.objects import BLOBS, ObjectStore
from app.store.records import shape_fault

__all__ = ["FINDING", "SESSION_ROW", "row_fault", "say_left_out", "session_fault"]

log = logging.getLogger("app.remote.store")

#: What `app data check` calls such a row.
FINDING = "row-of-another-shape"

#: A session's row, as `UnreadableSessionError` names what is damaged.
SESSION_ROW = "row in app_sessions"


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


def row_fault(row: Mapping[str, Any]) -> str | None:
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
    fault = shape_fault(row)
    if fault is not None:
        return fault
    try:
        check_file_name(_known(name))
    except InvalidNameError as error:
        return f"its name is not one a request can name ({error.problem})"
    return None


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
