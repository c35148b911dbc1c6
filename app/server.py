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
port in the lock file, and runs uvicorn on that socket. A `LockWatcher` checks that the lock
file is still the one it locked; if it is not, the server logs why, stops, and exits 70.
SIGTERM and SIGINT stop it gracefully: in-flight requests finish, then the lock is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import logging
import logging.config
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from copy import deepcopy
from types import FrameType
from typing import TYPE_CHECKING, Any, BinaryIO, Final

import anyio
from fastapi import Depends, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from app import __version__
from app.errors import (
    AppError,
    BadRequestError,
    LockLostError,
    PortInUseError,
    UploadTooLargeError,
)
from app.store import MAX_METADATA_BYTES, MAX_TITLE_CHARS, Store, Upload, check_file_name

if TYPE_CHECKING:
    from app.config import Config

__all__ = ["SessionCreate", "bind", "create_app", "serve"]

log = logging.getLogger("app.server")

# Form fields other than `file` are ignored, but they still cost memory while parsed.
_MAX_OTHER_FIELD_BYTES: Final = 64 * 1024
# How far a multipart body may exceed max_upload_bytes before its Content-Length alone
# refuses it: boundaries and part headers are small, other fields are capped above.
_MULTIPART_OVERHEAD: Final = 2 * _MAX_OTHER_FIELD_BYTES
_GRACEFUL_SHUTDOWN_SECONDS: Final = 30
# Uploads are hashed and written by a worker thread in batches of this size.
_BATCH_BYTES: Final = 1024 * 1024
# Pages of more than _UNBOUNDED_PAGE sessions are read by at most _LISTING_SLOTS worker
# threads at once (see list_sessions).
_LISTING_SLOTS: Final = 2
_UNBOUNDED_PAGE: Final = 100

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
    422: "validation_error",
}


class SessionCreate(BaseModel):
    """The body of ``POST /sessions``."""

    title: str = Field(default="", max_length=MAX_TITLE_CHARS, description="A human title.")
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description=f"Any JSON object, at most {MAX_METADATA_BYTES} bytes as JSON.",
    )


def _error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


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
    token when ``config.api_token`` is set. Errors are JSON ``{"code", "message"}``.

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
    )
    auth = [Depends(_require_token(config))]
    _add_error_handlers(app)
    _add_session_routes(app, store, config, auth)
    _add_file_routes(app, store, auth)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def app_error(request: Request, error: AppError) -> JSONResponse:
        return JSONResponse(error.to_dict(), status_code=error.http_status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(error.status_code, "http_error")
        message = str(error.detail)
        # The router's own answers name neither the route nor where to look.
        if error.status_code == 404 and message == "Not Found":
            message = f"no route {request.url.path}; GET /docs lists the API"
        elif error.status_code == 405 and message == "Method Not Allowed":
            message = (
                f"{request.method} is not allowed on {request.url.path}; GET /docs lists the API"
            )
        return _error(error.status_code, code, message, **(error.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in error.errors()
        )
        body = {
            "code": "validation_error",
            "message": f"invalid request: {problems}",
            "errors": jsonable_encoder(error.errors()),
        }
        return JSONResponse(body, status_code=422)

    @app.exception_handler(ClientDisconnect)
    async def client_disconnect(request: Request, error: ClientDisconnect) -> JSONResponse:
        return _error(400, "client_disconnected", "the client closed the connection mid-request")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        # Starlette re-raises after this answer, and uvicorn logs the traceback.
        return _error(500, "internal_error", "internal server error; the server log has details")


def _add_session_routes(app: FastAPI, store: Store, config: Config, auth: list[Any]) -> None:
    @app.get("/health", tags=["server"])
    async def health() -> dict[str, str]:
        """Liveness: answers without a token. Says which profile runs, never where its data is."""
        return {"status": "ok", "profile": config.profile, "version": __version__}

    @app.post(
        "/sessions",
        status_code=201,
        dependencies=auth,
        tags=["sessions"],
        response_model=None,
        responses={201: {"description": "The new session, with its `id`."}},
    )
    def create_session(body: SessionCreate | None = None) -> JSONResponse:
        """Create a session (durably: fsync before the answer)."""
        body = body or SessionCreate()
        # JSONResponse directly: the store's dict needs no second validation pass.
        return JSONResponse(store.create_session(body.title, body.metadata), status_code=201)

    listing_slots = anyio.Semaphore(_LISTING_SLOTS)

    @app.get("/sessions", dependencies=auth, tags=["sessions"])
    async def list_sessions(
        limit: int = Query(default=config.page_size, ge=1, le=1000),
        after: str | None = Query(default=None, description="The `next` of the previous page."),
    ) -> dict[str, Any]:
        """One page of sessions, oldest first, with the total and the next page's cursor."""
        # A large page reads and parses up to 1,000 session.json files, Python work that
        # holds the GIL: more of them at once on worker threads finish no sooner, but each
        # one delays the event loop's turn for the GIL (GET /health's p99 was about 70 ms
        # behind ten clients listing 1,000-item pages, 12 ms with two slots: bench/load.py).
        # The others wait here, without a thread. Pages of 100 or fewer are not held back.
        if limit <= _UNBOUNDED_PAGE:
            page = await run_in_threadpool(store.list_sessions, limit=limit, after=after)
        else:
            async with listing_slots:
                page = await run_in_threadpool(store.list_sessions, limit=limit, after=after)
        return page.to_dict()

    @app.get("/sessions/{session_id}", dependencies=auth, tags=["sessions"])
    def get_session(session_id: str) -> dict[str, Any]:
        """One session with its list of files."""
        return store.get_session(session_id)

    @app.delete("/sessions/{session_id}", dependencies=auth, tags=["sessions"])
    def delete_session(session_id: str) -> dict[str, Any]:
        """Move a session to the trash (``app sessions restore`` brings it back)."""
        entry = store.delete_session(session_id)
        return {"id": session_id, "deleted_at": entry.to_dict()["deleted_at"], "trash": entry.name}


def _add_file_routes(app: FastAPI, store: Store, auth: list[Any]) -> None:
    limit = store.max_upload_bytes

    @app.get("/sessions/{session_id}/files", dependencies=auth, tags=["files"])
    def list_files(session_id: str) -> dict[str, Any]:
        """The files of a session."""
        return {"items": store.list_files(session_id)}

    @app.post(
        "/sessions/{session_id}/files",
        status_code=201,
        dependencies=auth,
        tags=["files"],
        openapi_extra=_MULTIPART_SCHEMA,
    )
    async def upload_multipart(session_id: str, request: Request) -> dict[str, Any]:
        """Upload one file as ``multipart/form-data`` in the field ``file``, streamed to disk.

        The part's filename is the file's name; an existing name is refused (409).
        """
        boundary = _boundary(request.headers.get("content-type"))
        _refuse_declared_length(request, limit + _MULTIPART_OVERHEAD, limit)
        # File work on a worker thread: on the event loop it would stall every other
        # request (GET /health included) while the disk is busy (issue 11).
        await run_in_threadpool(store.get_session, session_id)  # 404 before reading the body
        sink = _MultipartSink(store, session_id)
        try:
            await sink.consume(request, boundary)
            upload = sink.finish()
            return await run_in_threadpool(upload.commit)
        finally:
            await sink.settle()
            sink.abort()

    @app.put("/sessions/{session_id}/files/{name:path}", dependencies=auth, tags=["files"])
    async def put_file(session_id: str, name: str, request: Request) -> JSONResponse:
        """Create or replace a file from the raw request body, streamed to disk.

        Answers 201 for a new file and 200 for a replaced one (the old bytes go to the trash).
        """
        _refuse_declared_length(request, limit, limit)
        # Reads session.json and creates the temporary file: a worker thread's job (issue 11).
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
        return JSONResponse(entry, status_code=200 if upload.replaced else 201)

    @app.get(
        "/sessions/{session_id}/files/{name:path}",
        dependencies=auth,
        tags=["files"],
        response_class=FileResponse,
    )
    def get_file(session_id: str, name: str) -> FileResponse:
        """The file's bytes, as an attachment."""
        file, entry = store.open_file(session_id, name)
        try:
            return _OpenFileResponse(
                file,
                media_type="application/octet-stream",
                filename=entry["name"],
                headers={"X-Content-Type-Options": "nosniff", "ETag": f'"{entry["sha256"]}"'},
            )
        except BaseException:
            file.close()
            raise

    @app.delete("/sessions/{session_id}/files/{name:path}", dependencies=auth, tags=["files"])
    def delete_file(session_id: str, name: str) -> dict[str, Any]:
        """Move a file to the trash."""
        entry = store.delete_file(session_id, name)
        return {
            "id": session_id,
            "name": entry.file,
            "deleted_at": entry.to_dict()["deleted_at"],
            "trash": entry.name,
        }


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
            await super().__call__({**scope, "extensions": extensions}, receive, send)
        finally:
            self._file.close()

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


def _parse(step: Callable[..., object], *args: bytes) -> None:
    try:
        step(*args)
    except AppError:
        raise  # from our callbacks: a bad name, a size over the limit, ...
    except Exception as error:  # python-multipart's own parse errors
        raise BadRequestError(f"malformed multipart body: {error}") from None


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

        parser = MultipartParser(
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
            raise BadRequestError(f"the filename {raw!r} is not UTF-8") from None
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
            server = uvicorn.Server(
                uvicorn.Config(
                    create_app(store, config),
                    log_config=log_config,
                    log_level=config.log_level,
                    lifespan="off",
                    timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
                    server_header=False,
                )
            )
            lost: list[str] = []

            def on_lost(reason: str) -> None:
                lost.append(reason)
                log.error(
                    "stopping: lock file %s %s; another process could take the data root, so "
                    "this server stops instead of sharing it",
                    root.lock.path if root.lock else "?",
                    reason,
                )
                server.should_exit = True

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
