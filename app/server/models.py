"""The bodies and path parameters of the HTTP contract, as the OpenAPI document shows them.

The models' docstrings and field descriptions are the document's text: changing one changes
the published contract (``tests/test_openapi.py``, ``docs/generated/http-routes.md``).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from fastapi import Path
from pydantic import BaseModel, Field

from app.names import FILE_NAME_PATTERN, MAX_NAME_BYTES
from app.storage import MAX_METADATA_BYTES, MAX_TITLE_CHARS

MAX_SESSION_BODY_BYTES: Final = 256 * 1024
"""Largest body of ``POST /sessions``: room for the metadata limit written out loosely."""
MAX_METADATA_DEPTH: Final = 32
"""Deepest nesting of objects and arrays in a session's metadata (``{}`` is one level)."""
MAX_METADATA_KEYS: Final = 1000
"""Most keys in a session's metadata, counting those of every nested object."""
MAX_EXACT_INT: Final = 2**53 - 1
"""Largest integer a metadata value may be (RFC 8259, 6: every JSON reader agrees on these)."""

METADATA_VALUE: Final = "MetadataValue"
#: A metadata value as the server takes it, for the document (``components/schemas``): a
#: schema-valid body that the server refused with 422 was a fuzzer's finding (an integer
#: beyond 2**53). An integer is bounded; any other number must not be integral, because JSON
#: Schema calls 1e300 an integer while the server, reading the text, takes it as a double:
#: the document is the stricter of the two there, never the looser. Depth, key count and
#: size are totals no schema states; the description says them.
METADATA_VALUE_SCHEMA: Final = {
    "description": (
        f"Any JSON value; an integer within ±{MAX_EXACT_INT} (send a larger one as a string)."
    ),
    "anyOf": [
        {
            "type": "object",
            "additionalProperties": {"$ref": f"#/components/schemas/{METADATA_VALUE}"},
        },
        {"type": "array", "items": {"$ref": f"#/components/schemas/{METADATA_VALUE}"}},
        {"type": "string"},
        {"type": "integer", "minimum": -MAX_EXACT_INT, "maximum": MAX_EXACT_INT},
        {"type": "number", "not": {"type": "integer"}},
        {"type": "boolean"},
        {"type": "null"},
    ],
}

SESSION_ID_PATTERN: Final = "^[0-9a-f]{32}$"

# Documented, not enforced by FastAPI: the store answers a malformed id or name with 400
# `invalid_name` and a message, as the command line does.
SessionId = Annotated[
    str,
    Path(
        description="32 lower-case hex digits.",
        json_schema_extra={"pattern": SESSION_ID_PATTERN},
    ),
]
FileName = Annotated[
    str,
    Path(
        description=(
            "The file's name: letters, marks, numbers, punctuation, symbols and spaces; not "
            "starting with '.', no '/' or '\\' or look-alikes, no leading or trailing space, at "
            f"most {MAX_NAME_BYTES} bytes in UTF-8 (see the HTTP reference)."
        ),
        json_schema_extra={"pattern": FILE_NAME_PATTERN, "maxLength": MAX_NAME_BYTES},
    ),
]


class SessionCreate(BaseModel):
    """The body of ``POST /sessions``."""

    model_config = {
        # No other field: one the server dropped would be data its client thinks stored
        # (`session_body` refuses it by name; this puts it in the OpenAPI schema).
        "extra": "forbid",
        "json_schema_extra": {
            "examples": [{"title": "site visit", "metadata": {"parcel": "A-17"}}]
        },
    }

    title: str = Field(default="", max_length=MAX_TITLE_CHARS, description="A human title.")
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            f"Any JSON object: at most {MAX_METADATA_BYTES} bytes as compact JSON (413 "
            f"beyond), nested at most {MAX_METADATA_DEPTH} levels deep and with at most "
            f"{MAX_METADATA_KEYS} keys in all (422 beyond). NaN and Infinity are not JSON, "
            "and a number must be one a 64-bit float holds as sent: integers within "
            f"±{MAX_EXACT_INT}, decimals no more precise than a double (422 otherwise: "
            "send it as a string)."
        ),
    )


class FileEntry(BaseModel):
    """One file of a session."""

    name: str
    size: int = Field(ge=0)
    sha256: str | None = Field(description="Hex SHA-256 of the bytes (null if unknown).")
    uploaded_at: str | None = Field(
        description="When this version was switched in (UTC, ISO 8601); null if unknown."
    )


class Session(BaseModel):
    """A session as stored in ``session.json``."""

    id: str = Field(pattern=SESSION_ID_PATTERN)
    title: str
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    files: list[FileEntry]


class LeftOutSession(BaseModel):
    """A session a page counts in its `total` but does not show."""

    id: str = Field(pattern=SESSION_ID_PATTERN)
    reason: Literal["linked", "unreadable"] = Field(
        description=(
            "`linked`: its directory on the server is a symbolic link (moved out of the data "
            "root and linked back), which the app never follows. `unreadable`: its "
            "`session.json` cannot be read."
        )
    )
    message: str = Field(description="What that means, and what to run on the server.")


class SessionPage(BaseModel):
    """One page of ``GET /sessions``."""

    items: list[Session]
    total: int = Field(ge=0)
    next: str | None = Field(
        description=(
            "Pass as `after` for the next page; null on the last. A page stops early, with "
            "fewer than `limit` items and a `next`, once its items reach the server's "
            "`page_max_bytes`."
        )
    )
    left_out: list[LeftOutSession] = Field(
        description=(
            "The sessions in this page's range that `total` counts but the page does not "
            "show, with why; empty unless an operator must act on the server (the server's "
            "log and `app data check` name each)."
        )
    )


class FileList(BaseModel):
    """The files of a session."""

    items: list[FileEntry]


class SessionDeleted(BaseModel):
    """A session moved to the trash."""

    id: str
    deleted_at: str
    trash: str = Field(
        description="The trash entry's name (`app sessions restore --entry` takes it)."
    )


class FileDeleted(BaseModel):
    """A file moved to the trash."""

    id: str
    name: str
    deleted_at: str
    trash: str


class TrashEmptied(BaseModel):
    """What ``POST /trash/empty`` removed for good."""

    removed: int = Field(description="How many trash entries were deleted.")
    entries: list[str] = Field(description="Their names under `.trash/`.")
    finished: list[str] | None = Field(
        default=None,
        description="Only where there were any: the entries an earlier empty, stopped partway "
        "(killed, or its audit line not written on a full disk), had taken out of the trash, "
        "whose removal this one finished (its audit line names them too).",
    )


class Health(BaseModel):
    """``GET /health``: 200 ``ok``, or 503 ``writes_stopped`` with the ``reason``."""

    status: str = Field(description="`ok`, or `writes_stopped` (every change is refused).")
    profile: str
    version: str
    reason: str | None = Field(
        default=None,
        description="Why writes stopped (an fsync failed, a directory of the data root was "
        "moved); only then present.",
    )


class Readiness(BaseModel):
    """``GET /ready``: whether this server can serve requests that need its backends."""

    status: str = Field(description="`ready` (200), or `unready` (503).")
    profile: str
    version: str
    checks: dict[str, str] = Field(
        description="Each backend the server needs (`database`, `object store`): `ok`, or "
        "why it is not ready and what to check."
    )
    message: str | None = Field(
        default=None, description="When unready: every backend that is not ready, and why."
    )


class Problem(BaseModel):
    """Every error: RFC 9457 problem details, with the app's stable ``code`` and ``message``."""

    title: str = Field(description="The HTTP status phrase.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What was refused, why, and the fix (same as `message`).")
    code: str = Field(description="A stable identifier for programs, e.g. `invalid_name`.")
    message: str = Field(description="What was refused, why, and the fix.")


class ValidationIssue(BaseModel):
    """One problem of a request that did not validate."""

    loc: list[str | int] = Field(description='Where: ["body", "metadata"], ["query", "limit"]...')
    msg: str
    type: str


class ValidationProblem(Problem):
    """A 422: the problem details with every validation issue."""

    errors: list[ValidationIssue]
