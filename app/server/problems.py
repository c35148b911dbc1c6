"""Every error answer as an RFC 9457 problem document, with the app's ``code`` and ``message``."""

from __future__ import annotations

import errno
import json
import logging
import math
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Mount
from starlette.staticfiles import StaticFiles

from app.errors import (
    AppError,
    FileNotFoundInSessionError,
    PreconditionFailedError,
    ReadOnlyStorageError,
    RequestTimeoutError,
    SessionNotFoundError,
    as_selected,
    quoted_values,
    storage_error,
    thread_limit,
)
from app.storage import Storage, holder_lost

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"

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


def title(status: int) -> str:
    return _TITLES.get(status) or HTTPStatus(status).phrase


def encodable(value: str) -> str:
    # An unpaired surrogate (from a JSON "\ud800" escape) cannot be encoded as UTF-8; an error
    # that quoted one made the error handler itself fail with a 500. Show it escaped.
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _json_safe(value: Any) -> Any:
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, dict):
        return {encodable(str(k)): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, bool | int | None) or (isinstance(value, float) and math.isfinite(value)):
        return value
    return encodable(str(value))


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        # Never fails: whatever an error quotes is made encodable first.
        return json.dumps(_json_safe(content), ensure_ascii=False, allow_nan=False).encode()


#: The longest message (and the longest part of a place) that a 422 sends whole.
_QUOTED: Final = 2000


def _shortened(text: str, longest: int = _QUOTED) -> str:
    """``text``, or, if longer than ``longest``, its start and its end (where a message
    says what to do) around how long it was."""
    if len(text) <= longest:
        return text
    head, tail = longest * 3 // 5, longest // 5
    return f"{text[:head]}... ({len(text)} characters in all) ...{text[-tail:]}"


def problem(
    status: int,
    code: str,
    message: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> ProblemResponse:
    body: dict[str, Any] = {
        "title": title(status),
        "status": status,
        "detail": message,
        "code": code,
        "message": message,
    }
    if errors is not None:
        body["errors"] = errors
    return ProblemResponse(body, status_code=status, headers=headers)


def problem_of(error: AppError, headers: dict[str, str] | None = None) -> ProblemResponse:
    shown = error.to_dict()  # some errors say less over HTTP (no data-root path)
    retry = getattr(error, "retry_after", None)
    if retry is not None:
        headers = {**(headers or {}), "Retry-After": str(retry)}
    want = getattr(error, "want_digest", None)
    if want is not None:
        headers = {**(headers or {}), "Want-Repr-Digest": want}
    # An `app ...` it names given the `--profile` the server was started with, as its log
    # and every refusal of the command line give it: a client read development's command
    # (red team 63 on regress).
    message = as_selected(shown["message"], keep=quoted_values(error))
    return problem(error.http_status, shown["code"], message, headers=headers)


def _allowed_methods(request: Request) -> str:
    # Starlette's 405 names the methods of the first route that matched the path only; the
    # path may have several (GET and POST /sessions), and a client needs them all.
    methods: set[str] = set()
    scope = _app_scope(request, request.scope["path"])
    for route in request.app.router.routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
            if isinstance(route, Mount) and isinstance(route.app, StaticFiles):
                # A mount has no methods of its own: its files (/docs-assets/) answer GET
                # and HEAD, and their 405 said `Allow:` empty, "allowed: ." (red team 70
                # on the HTTP contract), which says that the path takes no method at all.
                methods |= {"GET"}
    if "GET" in methods:
        methods.add("HEAD")  # answered as the GET (`app.server.limits.RequestGuard`)
    return ", ".join(sorted(methods))


def _app_scope(request: Request, path: str) -> dict[str, Any]:
    """``request``'s scope for the app's own routes, at ``path``: a mount the request went
    into (`/docs-assets/`) set its ``root_path`` to its own, and no route matched there."""
    root = request.scope.get("app_root_path", request.scope.get("root_path", ""))
    return {**request.scope, "path": path, "root_path": root}


def _routed(request: Request, path: str) -> bool:
    """Whether some route of the app takes ``path``, with any method (a mount's files, which
    may not be there, are no route)."""
    scope = _app_scope(request, path)
    return any(
        route.matches(scope)[0] is not Match.NONE
        for route in request.app.router.routes
        if not isinstance(route, Mount)
    )


def _mapped_or_raised(
    to_app_error: Callable[[BaseException, str], AppError | None],
) -> Callable[[Request, Exception], Awaitable[ProblemResponse]]:
    """A handler that answers an error ``to_app_error`` knows as that AppError, logged as a
    warning, and raises any other to the 500 handler (with its traceback in the log)."""

    async def handler(request: Request, error: Exception) -> ProblemResponse:
        mapped = to_app_error(error, f"{request.method} {request.url.path}")
        if mapped is None:
            raise error
        log.warning("%s %s: %s", request.method, request.url.path, error)
        return problem_of(mapped)

    return handler


def _read_only_refused(store: Storage) -> None:
    # GET /health then looks further than statvfs (`app.store.Store.note_read_only`); the
    # remote store has its own look (the database's refusal).
    note = getattr(store, "note_read_only", None)
    if note is not None:
        note()


def _caused_by_read_only(error: BaseException) -> bool:
    # A refusal made of an EROFS (`StoppedPartwayError` of an empty-trash whose filesystem
    # went read-only after its first entries): /health did not look again (red team 64).
    cause = error.__cause__
    return isinstance(cause, OSError) and cause.errno == errno.EROFS


def add_error_handlers(app: FastAPI, store: Storage) -> None:
    @app.exception_handler(AppError)
    async def app_error(request: Request, error: AppError) -> ProblemResponse:
        if holder_lost(error):
            # Refused at once, and the server stops now rather than at its next poll.
            stop = getattr(request.app.state, "on_lock_lost", None)
            if stop is not None:
                stop(getattr(error, "reason", error.message))
        if type(error) is SessionNotFoundError and error.where == "sessions":
            # A session deleted (by another client, or meanwhile) was "no session ...
            # `app sessions list` shows the sessions", which does not show it: named with its
            # trash entry and the restore, as `app sessions show` names it. Only on this
            # miss, off the event loop (a trash directory or a database is read).
            entry = await run_in_threadpool(store.deleted_entry, error.session_id)
            if entry is not None:
                error = SessionNotFoundError(error.session_id, deleted=entry)
        if type(error) is FileNotFoundInSessionError and error.deleted is None:
            # The same of a file (red team 69 on integrity): a DELETE whose answer was lost,
            # sent again, was "has no file", as of a file that never was.
            entry = await run_in_threadpool(store.deleted_entry, error.session_id, error.name)
            if entry is not None:
                error = FileNotFoundInSessionError(error.session_id, error.name, deleted=entry)
        if (
            type(error) is PreconditionFailedError
            and error.current is None
            and error.deleted is None
        ):
            # The same of an If-Match that found no file (red team 71 on integrity): a
            # DELETE with If-Match sent again after its lost answer was told "nothing was
            # changed" and "to create it, send the PUT", of the file its first try deleted.
            entry = await run_in_threadpool(store.deleted_entry, error.session_id, error.name)
            if entry is not None:
                error = PreconditionFailedError(
                    error.method,
                    error.session_id,
                    error.name,
                    error.wanted,
                    None,
                    sent=error.sent,
                    deleted=entry,
                )
        if isinstance(error, ReadOnlyStorageError) or _caused_by_read_only(error):
            _read_only_refused(store)
        if isinstance(error, RequestTimeoutError):
            # The rest of the body may still come: the connection cannot carry another request.
            return problem_of(error, {"Connection": "close"})
        return problem_of(error)

    # A full or read-only filesystem is the operator's to fix, not a bug: 507 or 503, and
    # never the path (OSError's message has it; /health hides it on purpose).
    mapped = _mapped_or_raised(storage_error)

    async def os_error(request: Request, error: Exception) -> ProblemResponse:
        if isinstance(error, OSError) and error.errno == errno.EROFS:
            _read_only_refused(store)
        return await mapped(request, error)

    app.add_exception_handler(OSError, os_error)
    # A worker thread (anyio's, Starlette's run_in_threadpool, a remote upload's) that could
    # not start: refused before its work began, so nothing was changed; a 503 to retry
    # rather than a 500 (red team 34).
    app.add_exception_handler(RuntimeError, _mapped_or_raised(thread_limit))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> ProblemResponse:
        code = _STATUS_CODES.get(error.status_code, "http_error")
        message = str(error.detail)
        headers = dict(error.headers or {})
        # The router's own answers name neither the route nor where to look.
        if error.status_code == 404 and message == "Not Found":
            path = request.url.path
            # No redirect to the path without its slash: Starlette's named the host of the
            # request's Host header (an open redirect, before any token was asked for).
            # `/` itself has no path without its slash: the API's routes are listed instead.
            bare = path.rstrip("/")
            # Named only where it is a route: `/docs-assets/` and `/nope/` named `/docs-assets`
            # and `/nope`, 404 as well (red team 70 on the HTTP contract).
            routed = bare != path and _routed(request, bare)
            bare = f"; without the trailing slash: {bare}" if routed else ""
            message = f"no route {path}{bare}; GET /docs lists the API"
        elif error.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
            message = (
                f"{request.method} is not allowed on {request.url.path}; allowed: "
                f"{headers['Allow']}. GET /docs lists the API"
            )
        return problem(error.status_code, code, message, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> ProblemResponse:
        # A field named by 200,000 characters, or a number of as many digits, was quoted
        # whole three times (in `detail`, `message` and `errors`), a 600 KB answer to a
        # body of 200 KB (red team 60): each message and place is shortened.
        issues = [
            {
                "loc": [_shortened(p, 300) if isinstance(p, str) else p for p in e.get("loc", ())],
                "msg": _shortened(str(e.get("msg"))),
                "type": str(e.get("type")),
            }
            for e in error.errors()
        ]
        problems = "; ".join(f"{'.'.join(str(p) for p in i['loc'])}: {i['msg']}" for i in issues)
        return problem(422, "validation_error", f"invalid request: {problems}", errors=issues)

    @app.exception_handler(ClientDisconnect)
    async def client_disconnect(request: Request, error: ClientDisconnect) -> ProblemResponse:
        return problem(400, "client_disconnected", "the client closed the connection mid-request")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> ProblemResponse:
        # Starlette re-raises after this answer, and uvicorn logs the traceback, then closes
        # the connection: say so, or the client's next request meets a reset socket.
        return problem(
            500,
            "internal_error",
            "internal server error; the server log has details",
            headers={"Connection": "close"},
        )
