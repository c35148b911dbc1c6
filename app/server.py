"""The HTTP server: a FastAPI app over a `Store`, and `serve`, which holds the data root for life.

Imported lazily (by ``app serve`` and by tests), so that ``app config`` never pays for
FastAPI and uvicorn.

Uploads are parsed as a stream: the multipart body of ``POST /sessions/{id}/files`` goes
through python-multipart's low-level parser straight into the destination's temporary file
in ``<root>/.tmp/``, and ``PUT /sessions/{id}/files/{name}`` writes ``request.stream()`` the
same way. FastAPI's ``UploadFile`` is not used: it spools every byte to a temporary file of
its own first, so each byte would be written to disk twice.

``serve`` opens the data root as a writer *before* binding the port, binds the socket
itself (a port in use is `PortInUseError`, exit 69, with the lock released), publishes the
port in the lock file, repairs what a crash of the previous holder left (`Store.check`), and
runs uvicorn on that socket. Every write checks that the lock file is still the one it locked
(answering 503 ``lock_lost`` if not, and stopping the server at once); a `LockWatcher` checks
it between requests too. Either way the server logs why, stops, and exits 70. A full or
read-only filesystem answers 507 or 503, never with a path.
SIGTERM and SIGINT stop it gracefully: in-flight requests finish, then the lock is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import json
import logging
import logging.config
import math
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from copy import deepcopy
from datetime import timedelta
from http import HTTPStatus
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, Final
from urllib.parse import unquote_to_bytes

import anyio
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from app import __version__
from app.errors import (
    AppError,
    BadRequestError,
    BodyTooLargeError,
    ConfirmationRequiredError,
    HeaderTooLargeError,
    InvalidNameError,
    LockLostError,
    MetadataTooLargeError,
    PortInUseError,
    RequestTimeoutError,
    TooManyUploadsError,
    UploadTooLargeError,
    storage_error,
)
from app.names import FILE_NAME_PATTERN, MAX_NAME_BYTES, check_file_name
from app.store import MAX_METADATA_BYTES, MAX_TITLE_CHARS, Store, Upload

if TYPE_CHECKING:
    from app.config import Config

__all__ = [
    "MAX_METADATA_DEPTH",
    "MAX_METADATA_KEYS",
    "MAX_SESSION_BODY_BYTES",
    "SessionCreate",
    "bind",
    "create_app",
    "serve",
]

log = logging.getLogger("app.server")

# Form fields other than `file` are ignored, but they still cost memory while parsed.
_MAX_OTHER_FIELD_BYTES: Final = 64 * 1024
# How far a multipart body may exceed max_upload_bytes before its Content-Length alone
# refuses it: boundaries and part headers are small, other fields are capped above.
_MULTIPART_OVERHEAD: Final = 2 * _MAX_OTHER_FIELD_BYTES
# RFC 2046, section 5.1.1: a boundary is 1 to 70 characters.
_MAX_BOUNDARY_CHARS: Final = 70
_GRACEFUL_SHUTDOWN_SECONDS: Final = 30
_CONFIRM: Final = "yes-i-mean-it"
_MAX_AGE_SECONDS: Final = 100 * 365 * 86400
# Uploads are hashed and written by a worker thread in batches of this size.
_BATCH_BYTES: Final = 1024 * 1024
# Pages of more than _UNBOUNDED_PAGE sessions are read by at most _LISTING_SLOTS worker
# threads at once (see list_sessions).
_LISTING_SLOTS: Final = 2
_UNBOUNDED_PAGE: Final = 100
# What a 503 `too_many_uploads` asks a client to wait: uploads in flight end within seconds
# unless they stall, and a stalled one is cut off after request_idle_seconds.
_UPLOAD_RETRY_AFTER_SECONDS: Final = 5

MAX_SESSION_BODY_BYTES: Final = 256 * 1024
"""Largest body of ``POST /sessions``: room for the metadata limit written out loosely."""
MAX_METADATA_DEPTH: Final = 32
"""Deepest nesting of objects and arrays in a session's metadata (``{}`` is one level)."""
MAX_METADATA_KEYS: Final = 1000
"""Most keys in a session's metadata, counting those of every nested object."""

_SESSION_ID_PATTERN: Final = "^[0-9a-f]{32}$"
_PROBLEM_MEDIA_TYPE: Final = "application/problem+json"

_STATUS_CODES: Final = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    411: "length_required",
    413: "upload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "validation_error",
}
# RFC 9110's phrases, fixed here: Python renamed 413 and 422 in 3.13.
_TITLES: Final = {413: "Content Too Large", 422: "Unprocessable Content"}


# --- the models the OpenAPI document shows ---------------------------------------------------


class SessionCreate(BaseModel):
    """The body of ``POST /sessions``."""

    model_config = {
        "json_schema_extra": {"examples": [{"title": "site visit", "metadata": {"parcel": "A-17"}}]}
    }

    title: str = Field(default="", max_length=MAX_TITLE_CHARS, description="A human title.")
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            f"Any JSON object: at most {MAX_METADATA_BYTES} bytes as compact JSON (413 "
            f"beyond), nested at most {MAX_METADATA_DEPTH} levels deep and with at most "
            f"{MAX_METADATA_KEYS} keys in all (422 beyond). NaN and Infinity are not JSON."
        ),
    )


class FileEntry(BaseModel):
    """One file of a session."""

    name: str
    size: int = Field(ge=0)
    sha256: str | None = Field(description="Hex SHA-256 of the bytes (null if unknown).")
    uploaded_at: str | None


class Session(BaseModel):
    """A session as stored in ``session.json``."""

    id: str = Field(pattern=_SESSION_ID_PATTERN)
    title: str
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    files: list[FileEntry]


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


class FileList(BaseModel):
    """The files of a session."""

    items: list[FileEntry]


class SessionDeleted(BaseModel):
    """A session moved to the trash."""

    id: str
    deleted_at: str
    trash: str = Field(description="The trash entry's name (`app sessions restore` takes it).")


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


class Health(BaseModel):
    """``GET /health``."""

    status: str
    profile: str
    version: str


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


# --- answers in the problem shape -------------------------------------------------------------


def _text(value: str) -> str:
    # An unpaired surrogate (from a JSON "\ud800" escape) cannot be encoded as UTF-8; an error
    # that quoted one made the error handler itself fail with a 500 (#9). Show it escaped.
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _json_safe(value: Any) -> Any:
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {_text(str(k)): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, bool | int | None) or (isinstance(value, float) and math.isfinite(value)):
        return value
    return _text(str(value))


class _ProblemResponse(JSONResponse):
    media_type = _PROBLEM_MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        # Never fails: whatever an error quotes is made encodable first.
        return json.dumps(_json_safe(content), ensure_ascii=False, allow_nan=False).encode()


def _problem(
    status: int,
    code: str,
    message: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> _ProblemResponse:
    title = _TITLES.get(status) or HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "title": title,
        "status": status,
        "detail": message,
        "code": code,
        "message": message,
    }
    if errors is not None:
        body["errors"] = errors
    return _ProblemResponse(body, status_code=status, headers=headers)


def _require_token(config: Config) -> Callable[..., Awaitable[None]]:
    bearer = HTTPBearer(auto_error=False, description="The profile's api_token.")
    expected = config.api_token.encode() if config.api_token else None

    # async: FastAPI runs a plain `def` dependency on a worker thread, one more thread hop
    # (and GIL hand-over) per request for a comparison that takes microseconds (issue 11).
    async def check(
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> None:
        if expected is None:
            return
        given = credentials.credentials.encode() if credentials else b""
        # Constant time: how much of a guess matched must not show in the response time.
        if not hmac.compare_digest(given, expected):
            message = (
                "missing bearer token; send 'Authorization: Bearer <token>'"
                if credentials is None
                else "invalid bearer token"
            )
            raise HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})

    return check


def create_app(store: Store, config: Config) -> FastAPI:
    """Build the FastAPI application over an open store.

    Every route but ``GET /health`` (and the OpenAPI schema and docs) requires the bearer
    token when ``config.api_token`` is set. Errors are RFC 9457 problem details
    (``application/problem+json``) with a stable ``code`` and a ``message``.

    Args:
        store: the store on the data root this server holds.
        config: the configuration (token, page size, upload limit, profile).

    Returns:
        The application; run it with uvicorn (see `serve`) or a test client.
    """
    app = FastAPI(
        title="app",
        version=__version__,
        summary="Review sessions: metadata and uploaded files.",
        docs_url=None,  # served by _add_api_docs, without a CDN
        redoc_url=None,  # ReDoc fetches its logo from cdn.redoc.ly even when self-hosted
    )
    auth = [Depends(_require_token(config))]
    _add_api_docs(app)
    _add_error_handlers(app)
    _add_session_routes(app, store, config, auth)
    _add_file_routes(app, store, auth, _UploadSlots(config.max_uploads_in_flight))
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    app.add_middleware(_RefuseUndecodablePaths)
    app.add_middleware(
        _BoundRequestBodies, idle=config.request_idle_seconds, total=config.request_seconds
    )
    return app


class _SlowReader(Exception):
    """The client read nothing of the response for ``request_idle_seconds``."""


class _BoundRequestBodies:
    """Cut off a client that stops sending its request or reading its response.

    Every wait for a piece of the body is bounded by ``request_idle_seconds``, and the whole
    request by ``request_seconds`` from the moment its head arrived: 408 ``request_timeout``,
    then the connection closes. 150 slow uploads once held the server's file descriptors for
    ever, and other clients got 500 (#9, item 9). The route sees the refusal as an error from
    ``receive``, so it cleans up as for any other (an upload's temporary file is removed).
    Once the body is complete, ``receive`` is not bounded (it waits for a disconnect).

    A response the client does not read for ``request_idle_seconds`` (its socket buffers
    full) is abandoned and the connection closed: a slow reader holds an open file too. A
    download may take as long as it needs, as long as the client keeps reading.
    """

    def __init__(self, app: ASGIApp, *, idle: float, total: float) -> None:
        self.app = app
        self.idle = idle
        self.total = total

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.total
        complete = False

        async def bounded() -> Any:
            nonlocal complete
            if complete:
                return await receive()
            left = deadline - loop.time()
            try:
                async with asyncio.timeout(min(self.idle, max(left, 0))):
                    message = await receive()
            except TimeoutError:
                if left <= self.idle:
                    raise RequestTimeoutError(
                        "the request did not arrive in full", self.total, "request_seconds"
                    ) from None
                raise RequestTimeoutError(
                    "the client sent no more of its body", self.idle, "request_idle_seconds"
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        async def bounded_send(message: Any) -> None:
            # uvicorn's send waits while the transport's buffer is over its high-water mark.
            try:
                async with asyncio.timeout(self.idle):
                    await send(message)
            except TimeoutError:
                raise _SlowReader from None

        try:
            await self.app(scope, bounded, bounded_send)
        except _SlowReader:
            # The answer has begun, so nothing more can be said to this client: uvicorn
            # closes a connection whose response the application left unfinished.
            log.warning(
                "%s %s: the client read nothing of the response for %g seconds "
                "(request_idle_seconds); closing its connection",
                scope.get("method"),
                scope.get("path"),
                self.idle,
            )


class _RefuseUndecodablePaths:
    """Answer 400 to a path that is not UTF-8 once percent-decoded, before any route runs.

    The HTTP server decodes such a path with replacement: ``a%FF`` and ``a%FE`` both became
    ``a\\ufffd``, one name for two different files (#9). A name must be valid text.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if raw:
            try:
                unquote_to_bytes(raw).decode("utf-8")
            except UnicodeDecodeError as error:
                shown = raw.decode("ascii", "backslashreplace")
                refused = InvalidNameError(
                    "path",
                    shown,
                    f"it is not valid UTF-8 once percent-decoded (byte "
                    f"0x{error.object[error.start]:02X}); percent-encode the name's UTF-8 bytes",
                )
                response = _problem(refused.http_status, refused.code, refused.message)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _allowed_methods(request: Request) -> str:
    # Starlette's 405 names the methods of the first route that matched the path only; the
    # path may have several (GET and POST /sessions), and a client needs them all.
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


_DOCS_ASSETS: Final = "/docs-assets"


def _add_api_docs(app: FastAPI) -> None:
    """Swagger UI at ``/docs``, with every asset served from here.

    FastAPI's own page loads its script, style and favicon from a CDN, so it is blank
    without internet. This is FastAPI's self-hosting recipe, with the files the
    fastapi-offline package ships (a missing directory fails here, at start-up).
    """
    from importlib.resources import files

    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    assets = StaticFiles(directory=str(files("fastapi_offline") / "static"))
    app.mount(_DOCS_ASSETS, assets, name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{_DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{_DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{_DOCS_ASSETS}/favicon.png",
        )


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def app_error(request: Request, error: AppError) -> _ProblemResponse:
        if isinstance(error, LockLostError):
            # Refused at once, and the server stops now rather than at its next poll.
            stop = getattr(request.app.state, "on_lock_lost", None)
            if stop is not None:
                stop(error.reason)
        shown = error.to_dict()  # some errors say less over HTTP (no data-root path)
        headers = None
        if isinstance(error, RequestTimeoutError):
            # The rest of the body may still come: the connection cannot carry another request.
            headers = {"Connection": "close"}
        elif isinstance(error, TooManyUploadsError):
            headers = {"Retry-After": str(error.retry_after)}
        return _problem(error.http_status, shown["code"], shown["message"], headers=headers)

    @app.exception_handler(OSError)
    async def os_error(request: Request, error: OSError) -> _ProblemResponse:
        # A full or read-only filesystem is the operator's to fix, not a bug: 507 or 503,
        # and never the path (OSError's message has it; /health hides it on purpose).
        mapped = storage_error(error, f"{request.method} {request.url.path}")
        if mapped is None:
            raise error  # a 500 from the handler below, with the traceback in the log
        log.warning("%s %s: %s", request.method, request.url.path, error)
        retry = getattr(mapped, "retry_after", None)
        headers = None if retry is None else {"Retry-After": str(retry)}
        return _problem(mapped.http_status, mapped.code, mapped.message, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> _ProblemResponse:
        code = _STATUS_CODES.get(error.status_code, "http_error")
        message = str(error.detail)
        headers = dict(error.headers or {})
        # The router's own answers name neither the route nor where to look.
        if error.status_code == 404 and message == "Not Found":
            message = f"no route {request.url.path}; GET /docs lists the API"
        elif error.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
            message = (
                f"{request.method} is not allowed on {request.url.path}; allowed: "
                f"{headers['Allow']}. GET /docs lists the API"
            )
        return _problem(error.status_code, code, message, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> _ProblemResponse:
        issues = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg")), "type": str(e.get("type"))}
            for e in error.errors()
        ]
        problems = "; ".join(f"{'.'.join(str(p) for p in i['loc'])}: {i['msg']}" for i in issues)
        return _problem(422, "validation_error", f"invalid request: {problems}", errors=issues)

    @app.exception_handler(ClientDisconnect)
    async def client_disconnect(request: Request, error: ClientDisconnect) -> _ProblemResponse:
        return _problem(400, "client_disconnected", "the client closed the connection mid-request")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> _ProblemResponse:
        # Starlette re-raises after this answer, and uvicorn logs the traceback, then closes
        # the connection: say so, or the client's next request meets a reset socket (#9).
        return _problem(
            500,
            "internal_error",
            "internal server error; the server log has details",
            headers={"Connection": "close"},
        )


# --- POST /sessions: strict JSON, bounded -------------------------------------------------------


def _invalid(loc: tuple[str | int, ...], message: str, kind: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", *loc), "msg": message, "type": kind}])


def _refuse_constant(name: str) -> Any:
    raise _invalid((), f"{name} is not JSON (RFC 8259 has no NaN or Infinity)", "json_invalid")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _invalid((), f"the number {text} does not fit a 64-bit float", "json_invalid")
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
    """Parse a request body as strict JSON text: UTF-8, no NaN or Infinity, finite numbers."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _invalid(
            (),
            f"the body is not UTF-8 (byte 0x{raw[error.start]:02X} at {error.start})",
            "json_invalid",
        ) from None
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
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
                _check_string(key, (*loc, _text(key)))
                stack.append((child, (*loc, _text(key))))
        elif isinstance(item, list):
            stack.extend((child, (*loc, i)) for i, child in enumerate(item))
        elif isinstance(item, str):
            _check_string(item, loc)


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


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
    """Bound the metadata's shape and size, so no stored session can break a listing (#9)."""
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


_JSON_TYPES: Final = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


async def _session_create(request: Request) -> SessionCreate:
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type.lower() != "application/json" and not content_type.lower().endswith("+json"):
        raise HTTPException(415, f"POST /sessions takes application/json, not {content_type!r}")
    raw = await _read_body(request, MAX_SESSION_BODY_BYTES, "creating a session")
    # No body at all is no title and no metadata; anything else must be JSON (whitespace alone
    # is not, and "\x0b" is not even JSON whitespace).
    data = _parse_json(raw) if raw else {}
    if not isinstance(data, dict):
        kind = _JSON_TYPES.get(type(data), "a number")
        raise _invalid((), f"the body must be a JSON object, not {kind}", "model_type")
    _check_text(data)
    try:
        body = SessionCreate.model_validate(data)
    except ValidationError as error:
        raise RequestValidationError(
            [
                {"loc": ("body", *e["loc"]), "msg": e["msg"], "type": e["type"]}
                for e in error.errors(include_url=False)
            ]
        ) from None
    _check_metadata(body.metadata)
    return body


# --- the routes -----------------------------------------------------------------------------

_ERRORS: Final = {
    400: "Malformed id or name, or a malformed body (`invalid_name`, `bad_request`).",
    401: "Missing or wrong bearer token (`unauthorized`).",
    404: "No such session or file.",
    409: (
        "A file of that name exists (`file_exists`), or the session holds "
        "`max_files_per_session` files already (`too_many_files`)."
    ),
    413: "The body is over a limit (`body_too_large`, `metadata_too_large`, `upload_too_large`).",
    415: "The body is not JSON (`unsupported_media_type`).",
    416: "The `Range` is outside the file (`range_not_satisfiable`).",
    422: "The request did not validate (`validation_error`, with `errors`).",
    403: "A protected profile needs the confirmation (`confirmation_required`).",
    503: (
        "The data root cannot be written now: read-only (`storage_read_only`), or the server "
        "lost its lock (`lock_lost`, it stops) or its directories changed (`data_root_changed`)."
    ),
    408: (
        "The request's head or body stopped arriving for `request_idle_seconds`, or took "
        "longer than `request_seconds` (`request_timeout`); the connection is closed."
    ),
    431: "The request line and headers exceed `max_header_bytes` (`header_too_large`).",
    507: "The data root's filesystem is full (`storage_full`); nothing was changed.",
}
#: What any write may answer besides its own errors: the storage said no.
_STORAGE: Final = (503, 507)
#: What the server answers on any route, before routing: the request's head was too slow or
#: too large (the HTTP protocol class, see `_bounded_h11`).
_EVERY_REQUEST: Final = (408, 431)
_RETRY_AFTER: Final = {
    "Retry-After": {
        "description": "Seconds to wait before retrying (`too_many_uploads`, "
        "`too_many_open_files`).",
        "schema": {"type": "string"},
    }
}
#: What every route's 503 may also be (added to each by `_openapi`).
_OUT_OF_FILES: Final = (
    "Or the server has as many files open as its limit allows (`too_many_open_files`, with "
    "`Retry-After`)."
)
#: The 503 of an upload route: the storage, or too many uploads in flight.
_BUSY: Final[dict[str, Any]] = {
    "description": _ERRORS[503]
    + " Or the server receives `max_uploads_in_flight` uploads already (`too_many_uploads`, "
    "with `Retry-After`)."
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"description": _ERRORS[status]} for status in statuses}


def _session_id() -> Any:
    # Documented, not enforced by FastAPI: the store answers a malformed id with 400
    # `invalid_name` and a message, as the command line does.
    return Path(
        description="32 lower-case hex digits.",
        json_schema_extra={"pattern": _SESSION_ID_PATTERN},
    )


def _file_name() -> Any:
    return Path(
        description=(
            "The file's name: letters, marks, numbers, punctuation, symbols and spaces; not "
            "starting with '.', no '/' or '\\' or look-alikes, no leading or trailing space, at "
            f"most {MAX_NAME_BYTES} bytes in UTF-8 (see the HTTP reference)."
        ),
        json_schema_extra={"pattern": FILE_NAME_PATTERN, "maxLength": MAX_NAME_BYTES},
    )


SessionId = Annotated[str, _session_id()]
FileName = Annotated[str, _file_name()]


def _links(**targets: dict[str, str]) -> dict[str, Any]:
    return {
        name: {"operationId": target.pop("operationId"), "parameters": target}
        for name, target in targets.items()
    }


_SESSION_LINKS: Final = _links(
    GetSession={"operationId": "getSession", "session_id": "$response.body#/id"},
    ListFiles={"operationId": "listFiles", "session_id": "$response.body#/id"},
    UploadFile={"operationId": "uploadFile", "session_id": "$response.body#/id"},
    PutFile={"operationId": "putFile", "session_id": "$response.body#/id"},
    DeleteSession={"operationId": "deleteSession", "session_id": "$response.body#/id"},
)


def _file_links() -> dict[str, Any]:
    return _links(
        GetFile={
            "operationId": "getFile",
            "session_id": "$request.path.session_id",
            "name": "$response.body#/name",
        },
        DeleteFile={
            "operationId": "deleteFile",
            "session_id": "$request.path.session_id",
            "name": "$response.body#/name",
        },
    )


_LOCATION: Final = {"Location": {"description": "The new resource.", "schema": {"type": "string"}}}


def _add_session_routes(app: FastAPI, store: Store, config: Config, auth: list[Any]) -> None:
    @app.get("/health", tags=["server"], operation_id="health", response_model=Health)
    async def health() -> dict[str, str]:
        """Liveness: answers without a token. Says which profile runs, never where its data is."""
        return {"status": "ok", "profile": config.profile, "version": __version__}

    @app.post(
        "/sessions",
        status_code=201,
        dependencies=auth,
        tags=["sessions"],
        operation_id="createSession",
        response_model=None,
        responses={
            201: {
                "model": Session,
                "description": "The new session, with its `id`.",
                "headers": _LOCATION,
                "links": _SESSION_LINKS,
            },
            **_errors(401, 413, 415, 422, *_STORAGE),
        },
        openapi_extra={
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/SessionCreate"}}
                },
            }
        },
    )
    async def create_session(request: Request) -> JSONResponse:
        """Create a session (durably: fsync before the answer)."""
        body = await _session_create(request)
        session = await run_in_threadpool(store.create_session, body.title, body.metadata)
        # JSONResponse directly: the store's dict needs no second validation pass.
        return JSONResponse(
            session, status_code=201, headers={"Location": f"/sessions/{session['id']}"}
        )

    listing_slots = anyio.Semaphore(_LISTING_SLOTS)

    @app.get(
        "/sessions",
        dependencies=auth,
        tags=["sessions"],
        operation_id="listSessions",
        response_model=None,
        responses={200: {"model": SessionPage}, **_errors(400, 401, 422)},
    )
    async def list_sessions(
        limit: int = Query(default=config.page_size, ge=1, le=1000),
        after: str | None = Query(
            default=None,
            description="The `next` of the previous page.",
            json_schema_extra={"pattern": _SESSION_ID_PATTERN},
        ),
    ) -> JSONResponse:
        """One page of sessions, oldest first, with the total and the next page's cursor.

        A page holds at most `limit` sessions, and stops early (with a `next` cursor) once its
        sessions take the server's `page_max_bytes` as JSON; it always holds at least one.
        """
        # A large page reads and parses up to 1,000 session.json files, Python work that
        # holds the GIL: more of them at once on worker threads finish no sooner, but each
        # one delays the event loop's turn for the GIL (GET /health's p99 was about 70 ms
        # behind ten clients listing 1,000-item pages, 12 ms with two slots: bench/load.py).
        # The others wait here, without a thread. Pages of 100 or fewer are not held back.
        if limit <= _UNBOUNDED_PAGE:
            page = await run_in_threadpool(
                store.list_sessions, limit=limit, after=after, max_bytes=config.page_max_bytes
            )
        else:
            async with listing_slots:
                page = await run_in_threadpool(
                    store.list_sessions, limit=limit, after=after, max_bytes=config.page_max_bytes
                )
        return JSONResponse(page.to_dict())

    @app.get(
        "/sessions/{session_id}",
        dependencies=auth,
        tags=["sessions"],
        operation_id="getSession",
        response_model=None,
        responses={200: {"model": Session}, **_errors(400, 401, 404)},
    )
    def get_session(session_id: SessionId) -> JSONResponse:
        """One session with its list of files."""
        return JSONResponse(store.get_session(session_id))

    @app.delete(
        "/sessions/{session_id}",
        dependencies=auth,
        tags=["sessions"],
        operation_id="deleteSession",
        response_model=None,
        responses={200: {"model": SessionDeleted}, **_errors(400, 401, 404, *_STORAGE)},
    )
    def delete_session(session_id: SessionId) -> JSONResponse:
        """Move a session to the trash (``app sessions restore`` brings it back)."""
        entry = store.delete_session(session_id)
        deleted_at = entry.to_dict()["deleted_at"]
        return JSONResponse({"id": session_id, "deleted_at": deleted_at, "trash": entry.name})

    protected = config.protected

    @app.post(
        "/trash/empty",
        dependencies=auth,
        tags=["trash"],
        operation_id="emptyTrash",
        response_model=TrashEmptied,
        responses=_errors(401, 403, 422, *_STORAGE),
    )
    def empty_trash(
        older_than: float | None = Query(
            default=None,
            ge=0,
            le=_MAX_AGE_SECONDS,  # a timedelta cannot hold 1e308 seconds (a 500 the fuzzer found)
            description=(
                "Only entries deleted more than this many seconds ago (at most 100 years). "
                "Default: all."
            ),
        ),
        confirm: str | None = Query(
            default=None,
            description=f"`{_CONFIRM}`: required on a protected profile (production always is).",
        ),
    ) -> dict[str, Any]:
        """Delete the trash for good, freeing its space while the server runs; audited.

        The explicit way to recover space on a full disk without stopping the server: the
        server holds the data root, so it does the removal itself (``app data empty-trash``
        is refused while it runs). Deleting a session only moves it to the trash. On a
        protected profile it needs ``?confirm=yes-i-mean-it``, as the command needs
        ``--yes-i-mean-it``.
        """
        if protected and confirm != _CONFIRM:
            raise ConfirmationRequiredError(
                "empty the trash", config.profile, f"?confirm={_CONFIRM}"
            )
        older = None if older_than is None else timedelta(seconds=older_than)
        removed = store.empty_trash(older_than=older, via="http")
        return {"removed": len(removed), "entries": [e.name for e in removed]}


_FILE_PATH: Final = "/sessions/{session_id}/files/{name:path}"


class _UploadSlots:
    """How many uploads are received at once; one more is refused, never queued.

    Each upload in flight holds a connection and a temporary file: 150 slow ones used up a
    256-descriptor limit and other requests got 500 (#9, item 9). The count lives on the
    event loop, which is the only place it changes, so it needs no lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """One slot for the block.

        Raises:
            TooManyUploadsError: every slot is taken (503 with ``Retry-After``).
        """
        if self.used >= self.limit:
            raise TooManyUploadsError(self.limit, _UPLOAD_RETRY_AFTER_SECONDS)
        self.used += 1
        try:
            yield
        finally:
            self.used -= 1


def _add_file_routes(app: FastAPI, store: Store, auth: list[Any], slots: _UploadSlots) -> None:
    @app.get(
        "/sessions/{session_id}/files",
        dependencies=auth,
        tags=["files"],
        operation_id="listFiles",
        response_model=None,
        responses={200: {"model": FileList}, **_errors(400, 401, 404)},
    )
    def list_files(session_id: SessionId) -> JSONResponse:
        """The files of a session."""
        return JSONResponse({"items": store.list_files(session_id)})

    @app.post(
        "/sessions/{session_id}/files",
        status_code=201,
        dependencies=auth,
        tags=["files"],
        operation_id="uploadFile",
        response_model=None,
        responses={
            201: {
                "model": FileEntry,
                "description": "The new file.",
                "headers": _LOCATION,
                "links": _file_links(),
            },
            **_errors(400, 401, 404, 409, 413, *_STORAGE),
            503: _BUSY,
        },
        openapi_extra=_MULTIPART_SCHEMA,
    )
    async def upload_multipart(session_id: SessionId, request: Request) -> JSONResponse:
        """Upload one file as ``multipart/form-data`` in the field ``file``, streamed to disk.

        The part's filename is the file's name; an existing name is refused (409).
        """
        boundary = _boundary(request.headers.get("content-type"))
        most = store.max_upload_bytes
        _refuse_declared_length(request, most + _MULTIPART_OVERHEAD, most)
        with slots.hold():
            # File work on a worker thread: on the event loop it would stall every other
            # request (GET /health included) while the disk is busy (issue 11).
            await run_in_threadpool(store.require_session, session_id)  # 404 before the body
            sink = _MultipartSink(store, session_id)
            try:
                await sink.consume(request, boundary)
                upload = sink.finish()
                entry = await run_in_threadpool(upload.commit)
            finally:
                await sink.settle()
                sink.abort()
        return _created_file(session_id, entry, 201)

    @app.put(
        "/sessions/{session_id}/files/{name:path}",
        dependencies=auth,
        tags=["files"],
        operation_id="putFile",
        response_model=None,
        responses={
            200: {"model": FileEntry, "description": "The file replaced an existing one."},
            201: {
                "model": FileEntry,
                "description": "A new file.",
                "headers": _LOCATION,
                "links": _file_links(),
            },
            **_errors(400, 401, 404, 409, 413, *_STORAGE),
            503: _BUSY,
        },
        openapi_extra={
            "requestBody": {
                "required": False,
                "description": "The file's bytes, whatever their type.",
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
    )
    async def put_file(session_id: SessionId, name: FileName, request: Request) -> JSONResponse:
        """Create or replace a file from the raw request body, streamed to disk.

        Answers 201 for a new file and 200 for a replaced one (the old bytes go to the trash).
        """
        _refuse_declared_length(request, store.max_upload_bytes, store.max_upload_bytes)
        with slots.hold():
            # Reads session.json, creates the temporary file: a worker thread's job (issue 11).
            upload = await run_in_threadpool(store.begin_upload, session_id, name, replace=True)
            pipeline = _Pipeline(upload)
            try:
                async for chunk in request.stream():
                    await pipeline.add(chunk)
                await pipeline.drain()
                entry = await run_in_threadpool(upload.commit)
            finally:
                await pipeline.settle()
                upload.abort()  # a no-op once committed
        return _created_file(session_id, entry, 200 if upload.replaced else 201)

    download: dict[str, Any] = {
        "response_class": FileResponse,
        "dependencies": auth,
        "tags": ["files"],
        "response_model": None,
        "responses": {
            200: {
                "description": "The file's bytes (ranges are served with 206).",
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
                "headers": {
                    "ETag": {
                        "description": "The SHA-256 of the bytes.",
                        "schema": {"type": "string"},
                    }
                },
            },
            206: {
                "description": "The part of the bytes a `Range` header asked for.",
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            },
            **_errors(400, 401, 404, 416),
        },
    }

    def get_file(session_id: SessionId, name: FileName) -> FileResponse:
        """The file's bytes, as an attachment."""
        file, entry = store.open_file(session_id, name)
        try:
            headers = {"X-Content-Type-Options": "nosniff"}
            if entry.get("sha256"):
                headers["ETag"] = f'"{entry["sha256"]}"'
            return _OpenFileResponse(
                file,
                media_type="application/octet-stream",
                filename=entry["name"],
                headers=headers,
            )
        except BaseException:
            file.close()
            raise

    app.get(_FILE_PATH, operation_id="getFile", **download)(get_file)

    def head_file(session_id: SessionId, name: FileName) -> FileResponse:
        """The file's headers (size, ETag) without its bytes."""
        return get_file(session_id, name)

    app.head(_FILE_PATH, operation_id="headFile", **download)(head_file)

    @app.delete(
        _FILE_PATH,
        dependencies=auth,
        tags=["files"],
        operation_id="deleteFile",
        response_model=None,
        responses={200: {"model": FileDeleted}, **_errors(400, 401, 404, *_STORAGE)},
    )
    def delete_file(session_id: SessionId, name: FileName) -> JSONResponse:
        """Move a file to the trash."""
        entry = store.delete_file(session_id, name)
        return JSONResponse(
            {
                "id": session_id,
                "name": entry.file,
                "deleted_at": entry.to_dict()["deleted_at"],
                "trash": entry.name,
            }
        )


def _created_file(session_id: str, entry: dict[str, Any], status: int) -> JSONResponse:
    from urllib.parse import quote

    headers = {"Location": f"/sessions/{session_id}/files/{quote(entry['name'])}"}
    return JSONResponse(entry, status_code=status, headers=headers if status == 201 else None)


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document, with one error shape for every 4xx and 5xx answer."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        for model in (SessionCreate, Problem, ValidationIssue, ValidationProblem):
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
        for operations in document["paths"].values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for status in _EVERY_REQUEST:
                    responses.setdefault(str(status), {"description": _ERRORS[status]})
                # Any route opens files, and may find the process out of descriptors.
                busy = responses.setdefault("503", {"description": ""})
                busy["description"] = f"{busy['description']} {_OUT_OF_FILES}".strip()
                busy.setdefault("headers", {}).update(_RETRY_AFTER)
                for status, response in responses.items():
                    if status[0] in "45":
                        shape = "ValidationProblem" if status == "422" else "Problem"
                        ref = {"$ref": f"#/components/schemas/{shape}"}
                        response["content"] = {_PROBLEM_MEDIA_TYPE: {"schema": ref}}
        app.openapi_schema = document
        return document

    return build


class _OpenFileResponse(FileResponse):
    """A `FileResponse` that sends a file the route already opened, and closes it.

    Starlette's `FileResponse` stats and opens its path only when it sends, after the route
    returned: a file deleted (moved to the trash) in between made the download a 500. The
    route opens the file instead (`Store.open_file`, which answers 404 for a file that is
    gone); the open descriptor keeps its bytes whatever happens to the name afterwards.
    Ranges work as in `FileResponse`, which reads through `_open_file`.
    """

    def __init__(self, file: BinaryIO, **kwargs: Any) -> None:
        self._file = file
        super().__init__(file.name, stat_result=os.fstat(file.fileno()), **kwargs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # pathsend would hand the server the path to reopen: the very race this avoids.
        extensions = dict(scope.get("extensions") or {})
        extensions.pop("http.response.pathsend", None)
        try:
            refusal = self._refuse_range(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
            await super().__call__({**scope, "extensions": extensions}, receive, send)
        finally:
            self._file.close()

    def _refuse_range(self, scope: Scope) -> _ProblemResponse | None:
        # FileResponse answers a Range it cannot serve in plain text; every error of this API
        # is a problem document. The same conditions as FileResponse's, checked first.
        from starlette.datastructures import Headers
        from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

        headers = Headers(scope=scope)
        wanted, if_range = headers.get("range"), headers.get("if-range")
        if wanted is None or (if_range is not None and not self._should_use_range(if_range)):
            return None
        assert self.stat_result is not None  # given by __init__
        size = self.stat_result.st_size
        try:
            self._parse_range_header(wanted, size)
        except MalformedRangeHeader as error:
            return _problem(
                400, "bad_request", f"malformed Range header {wanted!r}: {error.content}"
            )
        except RangeNotSatisfiable:
            return _problem(
                416,
                "range_not_satisfiable",
                f"Range {wanted!r} is outside the file's {size} bytes; ask for bytes=0-{size - 1}"
                " at most",
                headers={"Content-Range": f"bytes */{size}"},
            )
        return None

    @contextlib.asynccontextmanager
    async def _open_file(self) -> AsyncIterator[anyio.AsyncFile[bytes]]:
        self._file.seek(0)
        yield anyio.wrap_file(self._file)  # closed by __call__, once, whatever was sent


_MULTIPART_SCHEMA: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


def _refuse_declared_length(request: Request, allowed: int, limit: int) -> None:
    # Refuse before reading a byte when the client says up front that it is too large.
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        length = int(declared)
    except ValueError:
        raise BadRequestError(f"Content-Length {declared!r} is not a number") from None
    if length > allowed:
        raise UploadTooLargeError(limit)


def _boundary(content_type: str | None) -> bytes:
    from python_multipart.multipart import parse_options_header

    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise BadRequestError(
            f"expected a multipart/form-data body with a boundary, got Content-Type "
            f"{content_type!r}; send the file in the form field 'file', or use "
            "PUT /sessions/{id}/files/{name} with the raw bytes"
        )
    if len(boundary) > _MAX_BOUNDARY_CHARS:
        raise BadRequestError(
            f"the multipart boundary is {len(boundary)} characters long; RFC 2046 allows at most "
            f"{_MAX_BOUNDARY_CHARS}. Let the HTTP client choose the boundary"
        )
    return boundary


class _Pipeline:
    """Hash and write an upload on a worker thread while the event loop receives more.

    Chunks are collected into batches of about `_BATCH_BYTES`; one batch at a time is
    written by a threadpool worker (hashlib and ``write`` release the GIL) while the next
    one is received, so receiving, hashing and writing overlap on two cores. At most two
    batches are held in memory. The size limit is checked as bytes arrive, not when they
    are written.
    """

    def __init__(self, upload: Upload) -> None:
        self.upload = upload
        self.total = 0
        self._batch: list[bytes | memoryview] = []
        self._batch_bytes = 0
        self._pending: asyncio.Future[None] | None = None

    def queue(self, data: bytes | memoryview) -> None:
        """Add bytes to the current batch (synchronous: for parser callbacks).

        Raises:
            UploadTooLargeError: the upload is now over the limit.
        """
        self.total += len(data)
        if self.total > self.upload.limit:
            raise UploadTooLargeError(self.upload.limit, self.total)
        self._batch.append(data)
        self._batch_bytes += len(data)

    async def add(self, data: bytes) -> None:
        """Queue ``data`` and hand the batch to the worker once it is full."""
        if data:
            self.queue(data)
            await self.flush_if_full()

    async def flush_if_full(self) -> None:
        """Hand the batch over if it reached `_BATCH_BYTES`."""
        if self._batch_bytes >= _BATCH_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending  # one batch in flight at a time: memory stays bounded
        if self._batch:
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            self._pending = asyncio.ensure_future(run_in_threadpool(self.upload.write_all, batch))

    async def drain(self) -> None:
        """Write everything queued and wait for it (before commit)."""
        await self._flush()
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending

    async def settle(self) -> None:
        """Wait for a write in flight, ignoring its outcome, so that abort never races it."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            with contextlib.suppress(Exception):
                await pending


def _parse(step: Callable[..., object], *args: Any) -> object:
    try:
        return step(*args)
    except (AppError, OSError):
        raise  # from our callbacks: a bad name, a size over the limit, a full disk, ...
    except Exception as error:  # python-multipart's own parse errors
        raise BadRequestError(f"malformed multipart body: {error}") from None


_QUOTED_FILENAME: Final = re.compile(rb'filename="((?:[^"\\\\]|\\\\.)*)"')


def _refuse_a_cut_path(disposition: bytes) -> None:
    # python-multipart keeps only what follows the last backslash of "C:\\dir\\a" (an old
    # browser's full path), so "C:\\x\\evil.txt" became "evil.txt" while "dir/evil.txt" was
    # refused (#9). A backslash is a path separator here too: refuse the name it was part of.
    found = _QUOTED_FILENAME.search(disposition)
    value = found.group(1).replace(b'\\"', b'"') if found else disposition
    if b"\\" in value:
        shown = value.replace(b"\\\\", b"\\").decode("utf-8", "backslashreplace")
        raise InvalidNameError("file name", shown, "it contains a path separator")


class _MultipartSink:
    """python-multipart callbacks that stream the ``file`` part into an `Upload`."""

    def __init__(self, store: Store, session_id: str) -> None:
        self.store = store
        self.session_id = session_id
        self.upload: Upload | None = None
        self.pipeline: _Pipeline | None = None
        self._in_file = False  # the part being parsed is the field `file`
        # A `file` part begins inside a parser callback, which cannot wait for a worker
        # thread: its name waits here, and its first bytes in `_early`, until `consume`
        # starts the upload off the event loop (issue 11).
        self._pending_name: str | None = None
        self._early: list[memoryview] = []
        self._other_bytes = 0
        self._field = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}
        self._ended = False

    async def consume(self, request: Request, boundary: bytes) -> None:
        from python_multipart.multipart import MultipartParser

        parser = _parse(
            MultipartParser,
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )
        assert isinstance(parser, MultipartParser)
        limit = self.store.max_upload_bytes
        received = 0
        async for chunk in request.stream():
            if chunk:
                # The same bound a Content-Length is held to (`_refuse_declared_length`), for
                # a chunked body: the parser skips junk around the parts without a limit.
                received += len(chunk)
                if received > limit + _MULTIPART_OVERHEAD:
                    raise UploadTooLargeError(limit, received)
                _parse(parser.write, chunk)  # the callbacks queue the file's bytes
                await self._begin_pending()
                if self.pipeline is not None:
                    await self.pipeline.flush_if_full()
        _parse(parser.finalize)
        await self._begin_pending()
        if self.pipeline is not None:
            await self.pipeline.drain()

    async def _begin_pending(self) -> None:
        if self._pending_name is None:
            return
        name, self._pending_name = self._pending_name, None
        # Reads session.json and creates the temporary file: not on the event loop.
        self.upload = await run_in_threadpool(self.store.begin_upload, self.session_id, name)
        self.pipeline = _Pipeline(self.upload)
        early, self._early = self._early, []
        for piece in early:
            self.pipeline.queue(piece)

    def finish(self) -> Upload:
        if not self._ended:
            raise BadRequestError("the multipart body ended before its closing boundary")
        if self.upload is None:
            raise BadRequestError("no form field 'file' with a filename in the multipart body")
        return self.upload

    async def settle(self) -> None:
        if self.pipeline is not None:
            await self.pipeline.settle()

    def abort(self) -> None:
        if self.upload is not None:
            self.upload.abort()  # a no-op once committed

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]
        if len(self._value) > _MAX_OTHER_FIELD_BYTES:
            raise BadRequestError("a multipart part header is too long")

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        disposition, params = parse_options_header(self._headers.get(b"content-disposition"))
        if disposition != b"form-data" or params.get(b"name") != b"file":
            self._in_file = False
            return
        if self.upload is not None or self._pending_name is not None:
            raise BadRequestError("more than one form field 'file'; upload one file per request")
        raw = params.get(b"filename")
        if not raw:
            raise BadRequestError("the form field 'file' has no filename; name the file")
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidNameError("file name", repr(raw), "it is not valid UTF-8") from None
        _refuse_a_cut_path(self._headers.get(b"content-disposition", b""))
        check_file_name(name)
        self._pending_name, self._in_file = name, True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            if self.pipeline is None:
                self._early.append(memoryview(data)[start:end])
            else:
                self.pipeline.queue(memoryview(data)[start:end])
            return
        self._other_bytes += end - start
        if self._other_bytes > _MAX_OTHER_FIELD_BYTES:
            raise BadRequestError(
                f"form fields other than 'file' are larger than {_MAX_OTHER_FIELD_BYTES} bytes"
            )

    def _part_end(self) -> None:
        self._in_file = False

    def _end(self) -> None:
        self._ended = True


# --- serve -------------------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """Bind and listen on ``host:port`` (port 0 picks a free one).

    ``SO_REUSEADDR`` lets a restarted server bind at once although its killed predecessor's
    connections linger in TIME_WAIT; it never lets two servers listen on one port.

    Raises:
        PortInUseError: the port is taken, or the address cannot be used (exit 69).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise PortInUseError(host, port, f"cannot resolve {host!r}: {error.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        sock.close()
        reason = (
            "the address is already in use"
            if error.errno == errno.EADDRINUSE
            else os.strerror(error.errno or 0)
        )
        raise PortInUseError(host, port, reason) from None
    sock.set_inheritable(True)
    return sock


def _raw_problem(error: AppError) -> bytes:
    """A whole HTTP/1.1 response carrying ``error``, for answers given before any request."""
    response = _problem(error.http_status, error.code, error.message)
    status = error.http_status
    head = (
        f"HTTP/1.1 {status} {_TITLES.get(status) or HTTPStatus(status).phrase}\r\n"
        f"content-type: {_PROBLEM_MEDIA_TYPE}\r\n"
        f"content-length: {len(response.body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + bytes(response.body)


def _bounded_h11(max_header_bytes: int, idle_seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, with a bound on how long a request's head may take to arrive.

    h11 is chosen over httptools (uvicorn's default) because it bounds the request line and
    headers (``h11_max_incomplete_event_size``); httptools has no limit, and a 64 MiB header
    stalled the event loop for seconds and cost 110 MiB (#9, item 9). uvicorn bounds the
    wait between requests (``timeout_keep_alive``) but not for a head once its first byte
    came, nor on a new connection: a client that connects and sends nothing, or a header a
    byte at a time, held its connection for ever. Here the head must arrive within
    `idle_seconds` of the connection opening or of its first byte; then the body is the
    application's to bound (`_BoundRequestBodies`). Both refusals are problem documents.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    too_large = _raw_problem(HeaderTooLargeError(max_header_bytes))
    malformed = _raw_problem(
        BadRequestError(
            "malformed HTTP request: it is not HTTP/1.1 as RFC 9112 describes it (request line, "
            "header syntax, framing); the connection is closed. Check the client"
        )
    )
    too_slow = _raw_problem(
        RequestTimeoutError(
            "the request line and headers did not arrive", idle_seconds, "request_idle_seconds"
        )
    )

    class BoundedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._wait_for_head()

        def data_received(self, data: bytes) -> None:
            if self._head_timer is None and self._between_requests():
                self._wait_for_head()  # the first byte of the next request on a kept-alive one
            super().data_received(data)

        def on_response_complete(self) -> None:
            self._stop_waiting()  # uvicorn's keep-alive timeout bounds the wait for the next
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_waiting()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            # h11 refuses a head over its bound as a protocol error; uvicorn answers every one
            # with the same plain-text 400. Say which, in the problem shape of every error.
            received = len(self.conn.trailing_data[0])
            if received > max_header_bytes:
                log.warning("refused a request head over %d bytes (max_header_bytes)", received)
            self.transport.write(too_large if received > max_header_bytes else malformed)
            self.transport.close()

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _wait_for_head(self) -> None:
            self._head_timer = self.loop.call_later(idle_seconds, self._head_timed_out)

        def _stop_waiting(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if not self._between_requests() or self.transport.is_closing():
                return  # a request is running: its body is bounded by the application
            if self.conn.trailing_data[0]:
                self.transport.write(too_slow)  # part of a head came: say why it is refused
            self.transport.close()

    return BoundedH11Protocol


def _log_config(level: str) -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = deepcopy(LOGGING_CONFIG)
    config["loggers"]["app"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def serve(config: Config, *, host: str | None = None, port: int | None = None) -> None:
    """Run the server until SIGTERM or SIGINT; hold the data root's lock all along.

    Args:
        config: the configuration of the profile to serve.
        host: the address to listen on; ``config.host`` if ``None``.
        port: the port; ``config.port`` if ``None`` (0 picks a free one).

    Raises:
        DataRootInUseError: another process holds the data root (exit 75).
        PortInUseError: the port is taken (exit 69); the lock is released first.
        ProfileStampMismatchError: the root belongs to another profile (exit 78).
        LockLostError: the lock file was deleted or replaced while serving; the server
            stopped instead of sharing its root (exit 70).
    """
    import uvicorn

    from app.dataroot import open_root
    from app.lock import LockWatcher

    host = config.host if host is None else host
    port = config.port if port is None else port
    log_config = _log_config(config.log_level)
    logging.config.dictConfig(log_config)
    with open_root(config, kind="server", wanted=f"start the server on {host}:{port}") as root:
        assert root.lock is not None
        sock = bind(host, port)
        try:
            bound_port: int = sock.getsockname()[1]
            root.lock.update(port=bound_port)
            store = Store(root)
            # Whatever a crash of the last holder left half done is finished or undone
            # before the first request (#9, item 2); the audit log says what was done.
            for finding in store.check(repair=True, thorough=False).findings:
                log.warning(
                    "start-up check: %s %s: %s; %s%s",
                    finding.problem,
                    finding.target,
                    finding.detail,
                    "" if finding.repaired else "NOT repaired: ",
                    finding.repair,
                )
            application = create_app(store, config)
            server = uvicorn.Server(
                uvicorn.Config(
                    application,
                    log_config=log_config,
                    log_level=config.log_level,
                    lifespan="off",
                    timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
                    server_header=False,
                    http=_bounded_h11(config.max_header_bytes, config.request_idle_seconds),
                    h11_max_incomplete_event_size=config.max_header_bytes,
                )
            )
            lost: list[str] = []

            def on_lost(reason: str) -> None:
                if lost:
                    return  # the watcher and a refused write may both report it
                lost.append(reason)
                log.error(
                    "stopping: lock file %s %s; another process could take the data root, so "
                    "this server stops instead of sharing it",
                    root.lock.path if root.lock else "?",
                    reason,
                )
                server.should_exit = True

            application.state.on_lock_lost = on_lost
            log.info(
                "serving profile %s from data root %s on http://%s:%d (pid %d)",
                config.profile,
                root.path,
                host,
                bound_port,
                os.getpid(),
            )
            watcher = LockWatcher(root.lock, config.lock_check_seconds, on_lost).start()
            stop_signals = _quiet_signals()
            try:
                server.run(sockets=[sock])
            finally:
                watcher.stop()
                stop_signals()
        finally:
            sock.close()
        if lost:
            raise LockLostError(root.lock.path, lost[0])
        log.info("stopped; releasing the lock on %s", root.path)


def _quiet_signals() -> Callable[[], None]:
    """Make SIGTERM and SIGINT no-ops around uvicorn; return the function that undoes it.

    uvicorn handles both while it runs (graceful shutdown), then restores the handlers it
    found and raises the signal again. With the defaults that would kill the process before
    it releases the lock in order (truncate the holder JSON, unlock), so the handlers it
    finds are these no-ops instead.
    """

    def ignore(signum: int, frame: FrameType | None) -> None:
        return None

    previous = {sig: signal.signal(sig, ignore) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
