"""What the API says about itself: the OpenAPI document's shared parts, and the docs page.

Every 4xx and 5xx answer is documented with one problem shape; the descriptions of each error
status live here once, and each route names the statuses it may answer.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from app.server.models import (
    METADATA_VALUE,
    METADATA_VALUE_SCHEMA,
    Problem,
    SessionCreate,
    ValidationIssue,
    ValidationProblem,
)
from app.server.problems import PROBLEM_MEDIA_TYPE

_ERRORS: Final = {
    400: (
        "Malformed id or name, or a malformed body or `If-Match` (`invalid_name`, "
        "`bad_request`); a query parameter the operation does not take, or one given twice, "
        "or a body on an operation that takes none, or a `Content-Type` that gives a "
        "parameter twice (`bad_request`); a request that names a precondition its operation "
        "does not evaluate (`precondition_unsupported`): a file's operations evaluate "
        "`If-Match` and a PUT's `If-None-Match: *`; every other operation refuses `If-Match`, "
        "`If-Unmodified-Since`, and `If-None-Match` but on a GET. An upload (or a "
        "session's JSON) whose `Repr-Digest` or "
        "`Content-Digest` is not the SHA-256 of the bytes received (`digest_mismatch`) or "
        "names no `sha-256` (`digest_unsupported`), both with `Want-Repr-Digest: sha-256=10`; "
        "nothing was stored."
    ),
    401: "Missing or wrong bearer token (`unauthorized`).",
    404: "No such session or file.",
    409: (
        "A file of that name exists (`file_exists`), or the session holds "
        "`max_files_per_session` files already (`too_many_files`)."
    ),
    412: (
        "`If-Match` names no current version of the file (a strong comparison with its "
        "`ETag`), or `If-None-Match: *` and the file exists (`precondition_failed`); nothing "
        "was changed."
    ),
    411: (
        "The request gives neither `Content-Length` nor `Transfer-Encoding` "
        "(`length_required`), where a body is needed or on an HTTP/1.0 `POST`; nothing "
        "was changed, and the connection is closed."
    ),
    413: "The body is over a limit (`body_too_large`, `metadata_too_large`, `upload_too_large`).",
    415: "The body is not `application/json` (`unsupported_media_type`).",
    416: "No range of the `Range` is in the file (`range_not_satisfiable`).",
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
    431: (
        "The request line and headers exceed `max_header_bytes` (`header_too_large`), or a "
        "chunked body's trailer fields or chunk size line do (`body_line_too_large`)."
    ),
    507: (
        "The data root's filesystem is full, of bytes or of inodes (`storage_full`); nothing "
        "was changed."
    ),
}
# What any write may answer besides its own errors: the storage said no.
STORAGE: Final = (503, 507)
# What the server answers on any route, before routing: the request's head was too slow or
# too large (app.server.protocol).
_EVERY_REQUEST: Final = (408, 431)
# What any route may answer where the data root holds what the app did not write, or the
# server fails: listed in the HTTP reference's table, and missing from this document, so that
# a 500 of a documented code was an undocumented status to a client generated from it (red
# team 59 on the HTTP contract).
_SERVER_FAULT: Final = (
    "The data root holds what the app did not write, or the server failed: a session whose "
    "`session.json` or `records/` was damaged outside the app (`session_unreadable`), a file "
    "whose record cannot be read (`file_record_unreadable`) or whose bytes are not the ones "
    "acknowledged (`file_damaged`), a `POST /trash/empty` stopped partway "
    "(`stopped_partway`); each names what resolves it, and nothing was changed but what it "
    "says. Any other fault is `internal_error`, with the details in the server's log, and "
    "the connection is closed."
)
_RETRY_AFTER: Final = {
    "Retry-After": {
        "description": "Seconds to wait before retrying (`too_many_uploads`, "
        "`too_many_open_files`, `thread_limit`).",
        "schema": {"type": "string"},
    }
}
# Any route opens files, and may find the process out of descriptors, or hand its work to
# a thread that cannot start (red team 34).
_OUT_OF_FILES: Final = (
    "Or the server has as many files open as its limit allows (`too_many_open_files`, with "
    "`Retry-After`), or could not start a thread to do the request (`thread_limit`, with "
    "`Retry-After`; nothing was changed)."
)
# The 503 of an upload route: the storage, or too many uploads in flight.
BUSY: Final[dict[str, Any]] = {
    "description": _ERRORS[503]
    + " Or the server receives `max_uploads_in_flight` uploads already (`too_many_uploads`, "
    "with `Retry-After`)."
}
_SHA256: Final = "sha-256=:<base64 of the SHA-256>:"
# RFC 9530: the upload's digest, checked before the commit (app.digests).
DIGEST_HEADERS: Final[list[dict[str, Any]]] = [
    {
        "name": name,
        "in": "header",
        "required": False,
        "description": (
            f"`{_SHA256}` (RFC 9530) of {what}; the body is stored only if it is the "
            "SHA-256 of what arrived (400 `digest_mismatch` otherwise). Other algorithms "
            "alongside are ignored; a field without `sha-256` is 400 `digest_unsupported`."
        ),
        "schema": {"type": "string"},
        "example": "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:",
    }
    for name, what in (
        ("Repr-Digest", "the body"),
        ("Content-Digest", "the body (the same bytes: a body has no content coding)"),
    )
]
REPR_DIGEST: Final = {
    "Repr-Digest": {
        "description": f"`{_SHA256}` of the whole file (RFC 9530), on a 206 too.",
        "schema": {"type": "string"},
    }
}
LOCATION: Final = {"Location": {"description": "The new resource.", "schema": {"type": "string"}}}
BINARY: Final = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"description": _ERRORS[status]} for status in statuses}


def _links(parameters: dict[str, str], **operations: str) -> dict[str, Any]:
    return {
        link: {"operationId": operation, "parameters": parameters}
        for link, operation in operations.items()
    }


SESSION_LINKS: Final = _links(
    {"session_id": "$response.body#/id"},
    GetSession="getSession",
    ListFiles="listFiles",
    UploadFile="uploadFile",
    PutFile="putFile",
    DeleteSession="deleteSession",
)
FILE_LINKS: Final = _links(
    {"session_id": "$request.path.session_id", "name": "$response.body#/name"},
    GetFile="getFile",
    DeleteFile="deleteFile",
)


def openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
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
        # Set here, not as the field's json_schema_extra: pydantic resolves every $ref it
        # meets there among its own definitions, and this one is the document's.
        metadata = schemas["SessionCreate"]["properties"]["metadata"]
        metadata["additionalProperties"] = {"$ref": f"#/components/schemas/{METADATA_VALUE}"}
        schemas[METADATA_VALUE] = METADATA_VALUE_SCHEMA
        for operations in document["paths"].values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for status in _EVERY_REQUEST:
                    responses.setdefault(str(status), {"description": _ERRORS[status]})
                responses.setdefault("500", {"description": _SERVER_FAULT})
                busy = responses.setdefault("503", {"description": ""})
                busy["description"] = f"{busy['description']} {_OUT_OF_FILES}".strip()
                busy.setdefault("headers", {}).update(_RETRY_AFTER)
                for status, response in responses.items():
                    if status[0] in "45":
                        shape = "ValidationProblem" if status == "422" else "Problem"
                        ref = {"$ref": f"#/components/schemas/{shape}"}
                        response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": ref}}
        app.openapi_schema = document
        return document

    return build


_DOCS_ASSETS: Final = "/docs-assets"


def add_api_docs(app: FastAPI) -> None:
    """Swagger UI at ``/docs``, with every asset served from here.

    FastAPI's own page loads its script, style and favicon from a CDN, so it is blank
    without internet. This is FastAPI's self-hosting recipe, with the files the
    fastapi-offline package ships (a missing directory fails here, at start-up).
    """
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
