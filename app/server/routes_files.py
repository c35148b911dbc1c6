"""The routes of a session's files: list, upload (multipart or raw), download, delete."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from app.errors import FileExistsInSessionError
from app.server.downloads import OpenFileResponse
from app.server.models import FileDeleted, FileEntry, FileList, FileName, SessionId
from app.server.multipart import MULTIPART_OVERHEAD, MultipartSink, boundary_of
from app.server.openapi import BINARY, BUSY, FILE_LINKS, LOCATION, STORAGE, errors
from app.server.problems import ProblemResponse, problem
from app.server.uploads import Pipeline, UploadSlots, refuse_declared_length
from app.storage import FileEntry as StoredEntry
from app.storage import Storage, Upload

_FILE_PATH: Final = "/sessions/{session_id}/files/{name:path}"
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


def add_file_routes(app: FastAPI, store: Storage, auth: list[Any], slots: UploadSlots) -> None:
    @app.get(
        "/sessions/{session_id}/files",
        dependencies=auth,
        tags=["files"],
        operation_id="listFiles",
        response_model=None,
        responses={200: {"model": FileList}, **errors(400, 401, 404)},
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
                "headers": LOCATION,
                "links": FILE_LINKS,
            },
            **errors(400, 401, 404, 409, 413, *STORAGE),
            503: BUSY,
        },
        openapi_extra=_MULTIPART_SCHEMA,
    )
    async def upload_multipart(session_id: SessionId, request: Request) -> JSONResponse:
        """Upload one file as ``multipart/form-data`` in the field ``file``, streamed to disk.

        The part's filename is the file's name; an existing name is refused (409).
        """
        boundary = boundary_of(request.headers.get("content-type"))
        most = store.max_upload_bytes
        refuse_declared_length(request, most + MULTIPART_OVERHEAD, most)
        with slots.hold(request):
            # File work on a worker thread: on the event loop it would stall every other
            # request (GET /health included) while the disk is busy.
            await run_in_threadpool(store.require_session, session_id)  # 404 before the body
            sink = MultipartSink(store, session_id)
            try:
                await sink.consume(request, boundary)
                upload = sink.finish()
                entry = await run_in_threadpool(upload.commit)
            finally:
                await sink.settle()
                sink.abort()
        return _created_file(session_id, entry, 201)

    @app.put(
        _FILE_PATH,
        dependencies=auth,
        tags=["files"],
        operation_id="putFile",
        response_model=None,
        responses={
            200: {"model": FileEntry, "description": "The file replaced an existing one."},
            201: {
                "model": FileEntry,
                "description": "A new file.",
                "headers": LOCATION,
                "links": FILE_LINKS,
            },
            **errors(400, 401, 404, 409, 412, 413, *STORAGE),
            503: BUSY,
        },
        openapi_extra={
            "requestBody": {
                "required": False,
                "description": "The file's bytes, whatever their type.",
                "content": BINARY,
            }
        },
    )
    async def put_file(session_id: SessionId, name: FileName, request: Request) -> JSONResponse:
        """Create or replace a file from the raw request body, streamed to disk.

        Answers 201 for a new file and 200 for a replaced one (the old bytes go to the trash).
        """
        given = preconditions(request)
        create_only = given == ["if-none-match"] and request.headers[given[0]].strip() == "*"
        if given and not create_only:
            return unsupported_precondition(request, given)
        refuse_declared_length(request, store.max_upload_bytes, store.max_upload_bytes)
        try:
            upload, entry = await _receive(store, slots, request, session_id, name, create_only)
        except FileExistsInSessionError as error:
            if not create_only:
                raise
            return problem(
                412,
                "precondition_failed",
                f"session {error.session_id!r} already has a file {error.name!r}, and "
                "If-None-Match: * asked to create it only: nothing was replaced. Send the PUT "
                "without If-None-Match to replace it",
            )
        return _created_file(session_id, entry, 200 if upload.replaced else 201)

    download: dict[str, Any] = {
        "response_class": FileResponse,
        "dependencies": auth,
        "tags": ["files"],
        "response_model": None,
        "responses": {
            200: {
                "description": "The file's bytes (ranges are served with 206).",
                "content": BINARY,
                "headers": {
                    "ETag": {
                        "description": "The SHA-256 of the bytes.",
                        "schema": {"type": "string"},
                    }
                },
            },
            206: {
                "description": "The part of the bytes a `Range` header asked for.",
                "content": BINARY,
            },
            **errors(400, 401, 404, 416),
        },
    }

    def get_file(session_id: SessionId, name: FileName) -> FileResponse:
        """The file's bytes, as an attachment."""
        file, entry = store.open_file(session_id, name)
        try:
            headers = {"X-Content-Type-Options": "nosniff"}
            if entry.get("sha256"):
                headers["ETag"] = f'"{entry["sha256"]}"'
            return OpenFileResponse(
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
        responses={200: {"model": FileDeleted}, **errors(400, 401, 404, *STORAGE)},
    )
    def delete_file(session_id: SessionId, name: FileName, request: Request) -> JSONResponse:
        """Move a file to the trash."""
        given = preconditions(request)
        if given:
            return unsupported_precondition(request, given)
        entry = store.delete_file(session_id, name)
        return JSONResponse(
            {
                "id": session_id,
                "name": entry.file,
                "deleted_at": entry.to_dict()["deleted_at"],
                "trash": entry.name,
            }
        )


async def _receive(
    store: Storage,
    slots: UploadSlots,
    request: Request,
    session_id: str,
    name: str,
    create_only: bool,
) -> tuple[Upload, StoredEntry]:
    """Stream a PUT's body into the file; return the committed upload and its entry."""
    with slots.hold(request):
        # Reads session.json, creates the temporary file: a worker thread's job.
        upload = await run_in_threadpool(
            store.begin_upload, session_id, name, replace=not create_only
        )
        pipeline = Pipeline(upload)
        try:
            async for chunk in request.stream():
                await pipeline.add(chunk)
            await pipeline.drain()
            entry = await run_in_threadpool(upload.commit)
        finally:
            await pipeline.settle()
            upload.abort()  # a no-op once committed
    return upload, entry


_PRECONDITIONS: Final = ("if-match", "if-unmodified-since", "if-none-match")


def preconditions(request: Request) -> list[str]:
    """The preconditions (RFC 9110, 13.1) a write names, of those that apply to one.

    The store changes a file without comparing its version with one a client names in the
    same step: a check made before the change could pass for two clients at once. Ignored,
    as they were, they let a client that asked to replace only the version it had read
    replace another client's (and RFC 9110, 13.1.1, says an origin server MUST evaluate
    If-Match): a write that names one is refused, but for ``If-None-Match: *`` on a PUT,
    which is the store's own create-only step (``replace=False``), checked where the file
    is switched into place.
    """
    return [name for name in _PRECONDITIONS if name in request.headers]


def unsupported_precondition(request: Request, given: list[str]) -> ProblemResponse:
    names = " and ".join("-".join(p.title() for p in name.split("-")) for name in given)
    return problem(
        400,
        "precondition_unsupported",
        f"{request.method} {request.url.path} does not evaluate {names}: the server cannot "
        "compare the version it changes with the one named in the same step as the change, "
        "so it refuses rather than change another client's version. Read the current ETag "
        "with HEAD and send the request without it (a replaced or deleted version goes to "
        "the trash), or send If-None-Match: * with a PUT that must only create the file",
    )


def _created_file(session_id: str, entry: Mapping[str, Any], status: int) -> JSONResponse:
    headers = {"Location": f"/sessions/{session_id}/files/{quote(entry['name'])}"}
    return JSONResponse(entry, status_code=status, headers=headers if status == 201 else None)
