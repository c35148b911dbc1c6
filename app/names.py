"""The one rule for file names: plain, visible, normalised text that names one file.

Every way a name reaches the app (the path of ``PUT``, ``GET`` and ``DELETE``
``/sessions/{id}/files/{name}``, a multipart part's filename, ``app sessions restore --file``)
goes through :func:`check_file_name`. The HTTP API documents the same rule as a JSON Schema
pattern, :data:`FILE_NAME_PATTERN`, which the tests hold against this function.

A name must be valid text before it is a name: bytes that are not UTF-8 are refused by the
server before they reach this module (decoding them with replacement would let two different
names become the same one), and so are unpaired surrogates.
"""

from __future__ import annotations

import unicodedata
from typing import Final

from app.errors import InvalidNameError

__all__ = ["FILE_NAME_PATTERN", "MAX_NAME_BYTES", "check_file_name", "check_stored_name"]

MAX_NAME_BYTES: Final = 255
"""Longest file name, in UTF-8 bytes: what Linux filesystems allow for one path component."""

#: Letters, marks, numbers, punctuation and symbols (Unicode general categories L, M, N, P, S).
_ALLOWED_CATEGORIES: Final = frozenset("LMNPS")
#: Characters that are or look like a path separator. Both slashes separate paths somewhere
#: (``\\`` on Windows, where python-multipart used to cut a filename at it); the others are
#: confusables that display as one (fullwidth, division and fraction slashes, set minus...).
_SEPARATORS: Final = frozenset(
    "/\\\u2044\u2215\u2216\u2571\u2572\u27cb\u27cd\u29f5\u29f8\u29f9\ufe68\uff0f\uff3c"
)
#: What a name may not start with: a dot (``.``, ``..``, hidden files, the store's own
#: ``.new-<id>``) or a character that displays as one.
_LEADING_DOTS: Final = frozenset(".\u2024\ufe52\uff0e")

#: :func:`check_file_name` as an ECMA-262 regular expression (Unicode mode), for the OpenAPI
#: document. It cannot say "at most 255 bytes in UTF-8"; the schema adds ``maxLength``.
FILE_NAME_PATTERN: Final = (
    "^(?![" + "".join(f"\\u{ord(c):04x}" for c in sorted(_LEADING_DOTS)) + " ])"
    "(?!.* $)"
    "(?!.*[" + "".join(f"\\u{ord(c):04x}" for c in sorted(_SEPARATORS)) + "])"
    # U+20F1-U+20FF are unassigned, so \p{M} excludes them already; they are named because
    # schemathesis, which cannot read \p{M}, draws marks from the whole block U+20D0-U+20FF.
    "(?!.*[\\u20f1-\\u20ff])"
    "[\\p{L}\\p{M}\\p{N}\\p{P}\\p{S} ]+$"
)

_KINDS: Final = {
    "Cc": "the control character",
    "Cf": "the invisible format character",  # zero-width space and joiners, BOM, bidi controls
    "Co": "the private-use character",
    "Cn": "the unassigned code point",
    "Zl": "the line separator",
    "Zp": "the paragraph separator",
    "Zs": "the space character",  # any space but U+0020
}


def check_file_name(value: str) -> str:
    """Check a file name and return it in Unicode normal form C.

    Accepted: 1 to 255 bytes of UTF-8 made of letters, marks, numbers, punctuation and
    symbols (Unicode categories L, M, N, P and S) and the plain space (U+0020).

    Refused, each with a message naming the character:

    * ``/``, ``\\`` and the characters that look like them (fullwidth solidus U+FF0F, division
      slash U+2215, fraction slash U+2044, set minus U+2216...);
    * a leading ``.`` (which covers ``.`` and ``..``, keeps hidden files out of sessions and
      leaves dot-names to the store's bookkeeping) or a leading character that looks like one;
    * a leading or trailing space;
    * control characters, invisible format characters (zero-width space and joiners, the
      byte-order mark, bidirectional-text controls), other spaces (no-break, ideographic...),
      line and paragraph separators, private-use and unassigned code points, and unpaired
      surrogates.

    Names are normalised to NFC, so the same name typed on macOS (NFD) and on Linux (NFC)
    names the same file.

    Args:
        value: a file name from a request.

    Returns:
        The name in NFC.

    Raises:
        InvalidNameError: naming the problem (400 over HTTP).

    Examples:
        >>> check_file_name("cafe\\u0301.txt") == "caf\\u00e9.txt"
        True
    """
    if not isinstance(value, str) or not value:
        raise InvalidNameError("file name", str(value), "it is empty")
    for ch in value:
        if "\ud800" <= ch <= "\udfff":
            raise InvalidNameError(
                "file name",
                value,
                f"it is not valid Unicode (the unpaired surrogate U+{ord(ch):04X})",
            )
    name = unicodedata.normalize("NFC", value)
    for ch in name:
        if ch in "/\\":
            raise InvalidNameError("file name", value, "it contains a path separator")
        if ch in _SEPARATORS:
            raise InvalidNameError(
                "file name",
                value,
                f"it contains U+{ord(ch):04X}, which looks like a path separator",
            )
        if ch != " " and unicodedata.category(ch)[0] not in _ALLOWED_CATEGORIES:
            kind = _KINDS.get(unicodedata.category(ch), "the character")
            raise InvalidNameError("file name", value, f"it contains {kind} U+{ord(ch):04X}")
    if name[0] in _LEADING_DOTS:
        shown = "'.'" if name[0] == "." else f"U+{ord(name[0]):04X}, which looks like '.'"
        raise InvalidNameError("file name", value, f"it starts with {shown}")
    if name[0] == " " or name[-1] == " ":
        raise InvalidNameError("file name", value, "it starts or ends with a space")
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        # NFC can lengthen a name (U+FB2C, 3 bytes, is 6 in NFC): one sent within the limit
        # was refused as longer than the client sent, without a word on why (red team 35).
        sent = len(value.encode("utf-8", "surrogatepass"))
        how = "" if sent == size else f" once normalised to NFC ({sent} bytes as sent)"
        raise InvalidNameError(
            "file name",
            value,
            f"it is {size} bytes long in UTF-8{how}; the limit is {MAX_NAME_BYTES}",
        )
    return name


def check_stored_name(value: str) -> str:
    """Check a file name an earlier build of the app may have stored, and return it in NFC.

    The first build took any name but one with a separator, a control character, a
    leading dot or more than 255 bytes; a session it wrote with a no-break space in a name
    (copied from a word processor), a trailing space or a zero-width space failed its
    migration to records/ and blobs/, and with it every `app serve` and `app data check
    --repair` on the root (red team 38). A name already stored is held to what keeps it one
    name in its session's directory; a new one, to :func:`check_file_name`.

    Raises:
        InvalidNameError: a name no build of the app stored (a separator, a control
            character, a leading dot, more than 255 bytes, not valid Unicode).
    """
    if not isinstance(value, str) or not value:
        raise InvalidNameError("file name", str(value), "it is empty")
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        raise InvalidNameError("file name", value, "it is not valid Unicode")
    name = unicodedata.normalize("NFC", value)
    if "/" in name or "\\" in name:
        raise InvalidNameError("file name", value, "it contains a path separator")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise InvalidNameError("file name", value, "it contains a control character")
    if name.startswith("."):
        raise InvalidNameError("file name", value, "it starts with '.'")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise InvalidNameError("file name", value, f"it is longer than {MAX_NAME_BYTES} bytes")
    return name
