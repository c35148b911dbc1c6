"""The HTTP server: a FastAPI app over a `Storage`, and `serve`, which holds it for life.

Imported lazily (by ``app serve`` and by tests), so that ``app config`` never pays for
FastAPI and uvicorn. One concern per module:

- `models`: the bodies and path parameters of the HTTP contract.
- `problems`: every error as an RFC 9457 problem document; the error handlers.
- `auth`: the bearer token.
- `limits`: the ASGI middleware refusing undecodable paths.
- `protocol`: uvicorn's h11 protocol, bounding a request's head, body and response in time.
- `session_body`: the strict JSON body of ``POST /sessions``.
- `uploads`, `multipart`, `downloads`: file bytes in and out, streamed.
- `openapi`: the OpenAPI document's shared parts and the offline docs page.
- `routes_sessions`, `routes_files`: the routes.
- `factory`: `create_app`; `run`: `serve` and `bind`.
"""

from __future__ import annotations

from app.server.factory import create_app
from app.server.models import (
    MAX_METADATA_DEPTH,
    MAX_METADATA_KEYS,
    MAX_SESSION_BODY_BYTES,
    SessionCreate,
)
from app.server.run import bind, serve

__all__ = [
    "MAX_METADATA_DEPTH",
    "MAX_METADATA_KEYS",
    "MAX_SESSION_BODY_BYTES",
    "SessionCreate",
    "bind",
    "create_app",
    "serve",
]
