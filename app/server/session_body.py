"""The body of ``POST /sessions``: strict JSON, bounded in size, depth and keys.

Parsed here rather than by FastAPI, whose JSON parser accepts NaN and Infinity and a key given
twice, reads any size of body into memory, and lets through unpaired surrogates that cannot be
stored.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from decimal import Decimal
from difflib import get_close_matches
from typing import Any, Final

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from python_multipart.multipart import parse_options_header
from starlette.exceptions import HTTPException

from app.digests import Digests
from app.errors import BodyTooLargeError, MetadataTooLargeError
from app.server.models import (
    MAX_EXACT_INT,
    MAX_METADATA_DEPTH,
    MAX_METADATA_KEYS,
    MAX_SESSION_BODY_BYTES,
    SessionCreate,
)
from app.server.problems import encodable
from app.server.uploads import (
    refuse_content_coding,
    refuse_repeated_parameter,
    refuse_unframed_body,
    trailer_of,
)
from app.storage import MAX_METADATA_BYTES, TITLE_NUL

_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_FIELDS: Final = tuple(SessionCreate.model_fields)  # built once, not on every create
_JSON_TYPES: Final = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


async def session_create(request: Request) -> SessionCreate:
    refuse_content_coding(request, "the session's JSON")
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type.lower() != "application/json":
        # A +json type (merge-patch, JSON-LD, a problem report) was read as a session: its
        # rules say what its members mean, and this server does not follow them.
        suffix = (
            "; a +json type has rules of its own, which this server does not follow, so "
            "nothing was stored. Send the session as application/json"
            if content_type.lower().endswith("+json")
            else ""
        )
        raise HTTPException(
            415, f"POST /sessions takes application/json, not {content_type!r}{suffix}"
        )
    refuse_unframed_body(
        request,
        "a session would have been made without the title and metadata its body held",
        required=False,
    )
    refuse_repeated_parameter(request)
    _refuse_charset(request.headers.get("content-type"))
    # The integrity fields an upload's are (RFC 9530, and RFC 3230's Digest; Content-MD5
    # refused): ignored here, a body changed on the way, its client's digest sent along, was
    # a 201 for a session with a title and metadata its client never sent (red team 65).
    # Malformed: 400 before the body. Checked before the JSON is read, whose refusal would
    # name a symptom of the damage rather than the damage.
    digests = Digests.parse(
        request.headers, "POST", "the session's JSON", trailer=trailer_of(request)
    )
    raw = await _read_body(request, MAX_SESSION_BODY_BYTES, "creating a session")
    if digests is not None:
        digests.require("", "", hashlib.sha256(raw).hexdigest())
    # No body at all is no title and no metadata; anything else must be JSON (whitespace alone
    # is not, and "\x0b" is not even JSON whitespace).
    data = _parse_json(raw) if raw else {}
    if not isinstance(data, dict):
        kind = _JSON_TYPES.get(type(data), "a number")
        raise _invalid((), f"the body must be a JSON object, not {kind}", "model_type")
    _check_text(data)
    _refuse_unknown_fields(data)
    try:
        body = SessionCreate.model_validate(data)
    except ValidationError as error:
        raise RequestValidationError(
            [
                {"loc": ("body", *e["loc"]), "msg": e["msg"], "type": e["type"]}
                for e in error.errors(include_url=False)
            ]
        ) from None
    if "\x00" in body.title:
        raise _invalid(("title",), TITLE_NUL, "string_nul")
    _check_metadata(body.metadata)
    return body


def _refuse_charset(content_type: str | None) -> None:
    """Refuse a ``charset`` other than UTF-8: JSON is UTF-8 (RFC 8259, 8.1), and the body is
    read so whatever it says. ``charset=latin-1`` with the bytes ``C3 A9`` (Latin-1's "Ã©")
    was stored as "é", a 201 for a title its client did not send."""
    _, params = parse_options_header(content_type)
    charset = params.get(b"charset")
    if charset is not None and charset.decode("latin-1").lower() not in {"utf-8", "utf8"}:
        raise HTTPException(
            415,
            f"POST /sessions reads its JSON as UTF-8 (RFC 8259), and this body says "
            f"charset={charset.decode('latin-1')!r}: read as UTF-8, its text would not be the "
            "text sent, so nothing was stored. Send the JSON in UTF-8, with charset=utf-8 or "
            "no charset",
        )


def _refuse_unknown_fields(data: dict[str, Any]) -> None:
    """Refuse a field the body does not have: ``{"title": "a", "metdata": {...}}`` was a 201
    whose metadata was silently dropped (pydantic ignores extra fields by default)."""
    for key in data:
        if key not in _FIELDS:
            close = get_close_matches(key, _FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _invalid(
                (encodable(key),),
                f"is not a field of a session{hint}; the body takes {' and '.join(_FIELDS)} "
                "(anything else goes inside metadata), and nothing was stored",
                "extra_forbidden",
            )


def _invalid(loc: tuple[str | int, ...], message: str, kind: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", *loc), "msg": message, "type": kind}])


def _refuse_constant(name: str) -> Any:
    raise _invalid((), f"{name} is not JSON (RFC 8259 has no NaN or Infinity)", "json_invalid")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of two equal keys, and a proxy or a validator in front may keep the
    # first (RFC 8259, 4: their behaviour is unpredictable): one body, two meanings.
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _invalid(
                    (),
                    f"the key {encodable(key)!r} appears twice in one object; send each key once",
                    "json_invalid",
                )
            seen.add(key)
    return found


def _not_a_double(text: str, why: str) -> RequestValidationError:
    return _invalid(
        (),
        f"the number {text} {why}, so readers of JSON would not agree on it (RFC 8259, 6); "
        "nothing was stored. To keep it exactly, send it as a string",
        "json_invalid",
    )


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _not_a_double(text, "does not fit a 64-bit float")
    # 1.0000000000000000001 was stored as 1.0: kept only if the double says what was sent.
    if Decimal(text) != Decimal(repr(value)):
        raise _not_a_double(text, f"has more precision than a 64-bit float, which reads {value!r}")
    return value


def _exact_int(text: str) -> int:
    value = int(text)  # past sys.get_int_max_str_digits, ValueError: refused by the caller
    # Stored whole, 9007199254740993 is 9007199254740992 to a client that reads doubles.
    if abs(value) > MAX_EXACT_INT:
        raise _not_a_double(text, f"is beyond ±{MAX_EXACT_INT}, past which a double skips integers")
    return value


async def _read_body(request: Request, limit: int, what: str) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(what, limit)
    chunks, received = [], 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise BodyTooLargeError(what, limit, received)
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _invalid(
            (),
            f"the body is not UTF-8 (byte 0x{raw[error.start]:02X} at {error.start})",
            "json_invalid",
        ) from None
    try:
        return json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite,
            parse_int=_exact_int,
            object_pairs_hook=_unique_keys,
        )
    except RecursionError:
        raise _invalid(
            (),
            "the body is nested too deep to parse; metadata may be nested "
            f"{MAX_METADATA_DEPTH} levels",
            "json_invalid",
        ) from None
    except json.JSONDecodeError as error:
        raise _invalid(
            (), f"the body is not JSON: {error.msg} at {error.pos}", "json_invalid"
        ) from None
    except ValueError:  # an integer with more digits than Python converts
        digits = sys.get_int_max_str_digits()
        raise _invalid((), f"a number has more than {digits} digits", "json_invalid") from None


def _check_text(value: Any) -> None:
    """Refuse unpaired surrogates anywhere (keys too): they are not text and cannot be stored."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, loc = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                _check_string(key, (*loc, encodable(key)))
                stack.append((child, (*loc, encodable(key))))
        elif isinstance(item, list):
            stack.extend((child, (*loc, i)) for i, child in enumerate(item))
        elif isinstance(item, str):
            _check_string(item, loc)


def _check_string(value: str, loc: tuple[str | int, ...]) -> None:
    found = _SURROGATE.search(value)
    if found is not None:
        raise _invalid(
            loc,
            f"contains the unpaired surrogate U+{ord(found.group()):04X}, which is not text; "
            "send valid UTF-16 pairs or the character itself",
            "string_unicode",
        )


def _check_metadata(metadata: dict[str, Any]) -> None:
    """Bound the metadata's shape and size, so no stored session can break a listing."""
    depth, keys = 0, 0
    stack: list[tuple[Any, int]] = [(metadata, 1)]  # the body is bounded, so is this walk
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            depth, keys = max(depth, level), keys + len(item)
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            depth = max(depth, level)
            stack.extend((child, level + 1) for child in item)
    if depth > MAX_METADATA_DEPTH:
        raise _invalid(
            ("metadata",),
            f"metadata is nested {depth} levels deep; the limit is {MAX_METADATA_DEPTH}",
            "too_deep",
        )
    if keys > MAX_METADATA_KEYS:
        raise _invalid(
            ("metadata",),
            f"metadata has {keys} keys (in all its objects); the limit is {MAX_METADATA_KEYS}",
            "too_many_keys",
        )
    size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise MetadataTooLargeError(size, MAX_METADATA_BYTES)
