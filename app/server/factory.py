"""`create_app`: the FastAPI application over an open store, with its routes and bounds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI

from app import __version__
from app.server.auth import TokenRoute, require_token
from app.server.direct import DirectReads
from app.server.limits import RequestGuard
from app.server.openapi import add_api_docs, openapi
from app.server.problems import add_error_handlers
from app.server.routes_files import add_file_routes
from app.server.routes_sessions import add_session_routes, reads_on_loop
from app.server.uploads import UploadSlots
from app.storage import Storage

if TYPE_CHECKING:
    from app.config import Config


def create_app(store: Storage, config: Config) -> FastAPI:
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
        docs_url=None,  # served by add_api_docs, without a CDN
        redirect_slashes=False,  # a 404 that names the path without its slash (problems.py)
        redoc_url=None,  # ReDoc fetches its logo from cdn.redoc.ly even when self-hosted
        # FastAPI's own OpenTelemetry asks the global providers on every request whether
        # anyone listens (2% of the server's time under bench/load.py); nothing here does.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.router.route_class = TokenRoute  # the routes below check their token first
    auth = [Depends(require_token(config))]
    add_api_docs(app)
    add_error_handlers(app, store)
    add_session_routes(app, store, config, auth)
    add_file_routes(app, store, auth, UploadSlots(config.max_uploads_in_flight))
    app.openapi = openapi(app)  # type: ignore[method-assign]
    # A remote store's transfers wait on the network in worker threads, and its servers scale
    # by processes (--workers): they are not queued.
    local = getattr(store, "reads_from_local_files", False) is True
    if reads_on_loop(store):
        # Added first, so inside RequestGuard: gets and pages the route would read on the
        # event loop, answered without FastAPI's route (app.server.direct).
        app.add_middleware(DirectReads, store=store, config=config)
    app.add_middleware(
        RequestGuard,
        transfers_at_once=config.max_transfers_at_once if local else None,
        shutdown_grace=config.shutdown_grace_seconds,
    )
    return app
