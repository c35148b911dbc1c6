"""The routes of a session's files: list, upload (multipart or raw), download, delete."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any, Final
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from app.digests import Digests, field_value
from app.errors import FileExistsInSessionError
from app.server.downloads import OpenFileResponse
from app.server.models import FileDeleted, FileEntry, FileList, FileName, SessionId
from app.server.multipart import MULTIPART_OVERHEAD, MultipartSink, form_boundary
from app.server.openapi import (
    BINARY,
    BUSY,
    DIGEST_HEADERS,
    FILE_LINKS,
    LOCATION,
    REPR_DIGEST,
    STORAGE,
    errors,
)
from app.server.problems import ProblemResponse, problem
from app.server.uploads import (
    Pipeline,
    UploadSlots,
    refuse_declared_length,
    refuse_put_before_its_body,
    refuse_unframed_body,
    trailer_of,
)
from app.storage import FileEntry as StoredEntry
from app.storage import IfMatch, Storage, Upload

_FILE_PATH: Final = "/sessions/{session_id}/files/{name:path}"
_MULTIPART_SCHEMA: Final[dict[str, Any]] = {
    # RFC 7578 (4.8) allows a part no digest field: the request's covers the whole body.
    "parameters": [
        {
            **header,
            "description": header["description"].replace("the body", "the whole multipart body", 1),
        }
        for header in DIGEST_HEADERS
    ],
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
    },
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
            **errors(400, 401, 404, 409, 411, 413, 415, *STORAGE),
            503: BUSY,
        },
        openapi_extra=_MULTIPART_SCHEMA,
    )
    async def upload_multipart(session_id: SessionId, request: Request) -> JSONResponse:
        """Upload one file as ``multipart/form-data`` in the field ``file``, streamed to disk.

        The part's filename is the file's name; an existing name is refused (409).
        """
        refuse_unframed_body(
            request, "the form would have been read as empty, and its file refused", required=True
        )
        boundary = form_boundary(request)
        digests = Digests.parse(request.headers, "POST", "the multipart body", trailer_of(request))
        most = store.max_upload_bytes
        refuse_declared_length(request, most + MULTIPART_OVERHEAD, most)
        with slots.hold(request):
            # File work on a worker thread: on the event loop it would stall every other
            # request (GET /health included) while the disk is busy.
            await run_in_threadpool(store.require_session, session_id)  # 404 before the body
            sink = MultipartSink(store, session_id, digests)
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
            **errors(400, 401, 404, 409, 411, 412, 413, 415, *STORAGE),
            503: BUSY,
        },
        openapi_extra={
            "parameters": DIGEST_HEADERS,
            "requestBody": {
                "required": False,
                "description": "The file's bytes, whatever their type.",
                "content": BINARY,
            },
        },
    )
    async def put_file(session_id: SessionId, name: FileName, request: Request) -> JSONResponse:
        """Create or replace a file from the raw request body, streamed to disk.

        Answers 201 for a new file and 200 for a replaced one (the old bytes go to the trash).
        With `If-Match: "<ETag>"` (a list, or `*`), it replaces only a current version named
        there, compared in the same step as the switch (412 otherwise); with
        `If-None-Match: *` it only creates.
        """
        refuse_put_before_its_body(request, f"/sessions/{session_id}/files", store.max_upload_bytes)
        unsupported = preconditions(request)
        if unsupported:
            return unsupported_precondition(request, unsupported)
        if_match = if_match_of(request)
        # Malformed: 400 before the body. A chunked body's trailer is checked after it.
        digests = Digests.parse(request.headers, "PUT", trailer=trailer_of(request))
        create_only = "if-none-match" in request.headers
        try:
            upload, entry = await _receive(
                store, slots, request, session_id, name, create_only, if_match, digests
            )
        except FileExistsInSessionError as error:
            if not create_only:
                raise
            return problem(
                412,
                "precondition_failed",
                f"session {error.session_id!r} already has a file {error.name!r}, and "
                "If-None-Match: * asked to create it only: nothing was replaced. Send the PUT "
                "without If-None-Match to replace it (if this PUT is a retry of one whose "
                "answer was lost, its first try may have stored it: HEAD the file, whose ETag "
                "is the SHA-256 of its bytes)",
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
                    },
                    **REPR_DIGEST,
                },
            },
            206: {
                "description": "The part of the bytes a `Range` header asked for.",
                "content": BINARY,
                "headers": REPR_DIGEST,
            },
            **errors(400, 401, 404, 412, 416),
        },
    }

    def get_file(
        session_id: SessionId, name: FileName, request: Request
    ) -> FileResponse | ProblemResponse:
        """The file's bytes, as an attachment (with `If-Match`, only a version named there)."""
        return _download(store, session_id, name, request)

    app.get(_FILE_PATH, operation_id="getFile", **download)(get_file)

    def head_file(
        session_id: SessionId, name: FileName, request: Request
    ) -> FileResponse | ProblemResponse:
        """The file's headers (size, ETag) without its bytes."""
        return get_file(session_id, name, request)

    app.head(_FILE_PATH, operation_id="headFile", **download)(head_file)

    @app.delete(
        _FILE_PATH,
        dependencies=auth,
        tags=["files"],
        operation_id="deleteFile",
        response_model=None,
        responses={200: {"model": FileDeleted}, **errors(400, 401, 404, 412, *STORAGE)},
    )
    def delete_file(session_id: SessionId, name: FileName, request: Request) -> JSONResponse:
        """Move a file to the trash (with `If-Match`, only a current version named there)."""
        unsupported = preconditions(request, delete=True)
        if unsupported:
            return unsupported_precondition(request, unsupported)
        entry = store.delete_file(session_id, name, if_match=if_match_of(request))
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
    if_match: IfMatch | None,
    digests: Digests | None,
) -> tuple[Upload, StoredEntry]:
    """Stream a PUT's body into the file; return the committed upload and its entry."""
    with slots.hold(request):
        # Reads session.json, creates the temporary file: a worker thread's job.
        upload = await run_in_threadpool(
            partial(
                store.begin_upload,
                session_id,
                name,
                replace=not create_only,
                if_match=if_match,
                digests=digests,
            )
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


PRECONDITIONS: Final = ("if-match", "if-unmodified-since", "if-none-match")


def _download(
    store: Storage, session_id: str, name: str, request: Request
) -> FileResponse | ProblemResponse:
    """A file's download, with its ``If-Match`` evaluated as RFC 9110 (13.1.1) says it must be.

    Ignored, a client that asked for the version it had read got another client's newer one
    as if it were that one. ``If-Unmodified-Since`` alone is refused, as on a write (a second
    cannot tell two versions apart); ``If-None-Match`` and ``If-Modified-Since`` are not
    evaluated (never a 304, which is always correct).
    """
    # A HEAD's refusal is the GET's, word for word: RFC 9110 (9.3.2) has a HEAD answered
    # with the GET's header fields, and its method in the message made a 412's and a 400's
    # Content-Length differ from the GET's (red team 63), where every other route's HEAD is
    # answered as its GET (`app.server.limits`).
    method = "GET" if request.method == "HEAD" else request.method
    if "if-unmodified-since" in request.headers and "if-match" not in request.headers:
        return unsupported_precondition(request, ["if-unmodified-since"], method=method)
    wanted = if_match_of(request)
    file, entry = store.open_file(session_id, name)
    try:
        if wanted is not None:
            wanted.require(method, session_id, name, entry.get("sha256"))
        return OpenFileResponse(
            file,
            session_id=session_id,
            entry=entry,
            media_type="application/octet-stream",
            filename=entry["name"],
            headers=_download_headers(entry),
        )
    except BaseException:
        file.close()
        raise


def preconditions(request: Request, *, delete: bool = False) -> list[str]:
    """The preconditions (RFC 9110, 13.1) a file's write names that it does not evaluate.

    A file's writes evaluate ``If-Match`` (`if_match_of`), in the same step as the change,
    and a file's PUT ``If-None-Match: *`` (create only). Evaluated nowhere else: a session has
    no ETag, and every other route refuses them all (`app.server.auth.ignored_preconditions`).
    ``If-Unmodified-Since`` never: ``Last-Modified`` has whole seconds, so two
    versions written within one second share a date, and the check would pass for a version
    the client never saw; RFC 9110 (13.1.4) has it ignored when ``If-Match`` is there, as it
    is here. ``If-None-Match`` with tags neither: a write that should happen only over a
    version other than some would be a strange thing to want. Ignored, any of these would let
    a client that asked to change only the version it had read change another client's: a
    write that names one is refused.
    """
    given = [name for name in PRECONDITIONS if name in request.headers]
    headers = request.headers
    return [
        name
        for name in given
        if not (
            name == "if-match"
            or (name == "if-unmodified-since" and "if-match" in headers)
            or (name == "if-none-match" and not delete and headers[name].strip(" \t") == "*")
        )
    ]


def if_match_of(request: Request) -> IfMatch | None:
    """The request's ``If-Match``, parsed (a malformed one is a 400), or ``None``."""
    header = request.headers.get("if-match")
    return None if header is None else IfMatch.parse(header)


def unsupported_precondition(
    request: Request, given: list[str], *, file: bool = True, method: str | None = None
) -> ProblemResponse:
    names = " and ".join("-".join(p.title() for p in name.split("-")) for name in given)
    if not file:
        why = (
            "a session has no ETag to compare with, nor has a list or the trash (a file's GET, "
            "HEAD, PUT and DELETE evaluate If-Match)"
        )
        fix = "Send the request without it, or send If-Match with a file's own request"
    else:
        why = (
            "a file's writes evaluate If-Match (the ETag that GET or HEAD gave, compared in "
            "the same step as the change) and a PUT's If-None-Match: * only; a date cannot "
            "tell apart two versions written within one second"
        )
        fix = (
            "Send If-Match with the file's ETag instead, If-None-Match: * with a PUT that "
            "must only create the file, or neither"
        )
    return problem(
        400,
        "precondition_unsupported",
        f"{method or request.method} {request.url.path} does not evaluate {names}: {why}; it "
        f"refuses rather than act on a version the client did not mean, and nothing was "
        f"changed. {fix}",
    )


def _download_headers(entry: StoredEntry) -> dict[str, str]:
    headers = {"X-Content-Type-Options": "nosniff"}
    sha256 = entry.get("sha256")
    if sha256:
        headers["ETag"] = f'"{sha256}"'
        # RFC 9530, 3: the whole file's digest, on a 206 too (a Content-Digest would be the
        # part's); the client checks it once it has put all the parts together.
        headers["Repr-Digest"] = field_value(sha256)
    return headers


def _created_file(session_id: str, entry: Mapping[str, Any], status: int) -> JSONResponse:
    headers = {"Location": f"/sessions/{session_id}/files/{quote(entry['name'])}"}
    return JSONResponse(entry, status_code=status, headers=headers if status == 201 else None)
