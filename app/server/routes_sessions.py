"""The routes of the server itself, of sessions, and of the trash."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from app import __version__
from app.errors import ConfirmationRequiredError, as_selected
from app.server.committer import Committer
from app.server.models import (
    SESSION_ID_PATTERN,
    Health,
    Readiness,
    Session,
    SessionDeleted,
    SessionId,
    SessionPage,
    TrashEmptied,
)
from app.server.openapi import DIGEST_HEADERS, LOCATION, SESSION_LINKS, STORAGE, errors
from app.server.session_body import session_create
from app.storage import Emptied, Storage

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.types import Receive, Scope, Send

    from app.config import Config

_CONFIRM: Final = "yes-i-mean-it"
# A timedelta cannot hold 1e308 seconds (a 500 the fuzzer found).
_MAX_AGE_SECONDS: Final = 100 * 365 * 86400
# Pages of more than UNBOUNDED_PAGE sessions are read by at most _LISTING_SLOTS worker
# threads at once (see list_sessions).
_LISTING_SLOTS: Final = 2
UNBOUNDED_PAGE: Final = 100


class EncodedJSON(JSONResponse):
    """A JSON answer whose body the store already encoded (as JSONResponse would have)."""

    def render(self, content: Any) -> bytes:
        assert isinstance(content, bytes)
        return content


def reads_on_loop(store: Storage) -> bool:
    """Whether a get and a page of up to `UNBOUNDED_PAGE` are read on the event loop.

    The local store answers them from bytes it keeps encoded, at three stat calls a session
    at most (a page of 100: under 1 ms, bench/session_reads.py): less than handing it to a
    worker thread costs, two GIL hand-overs that can each wait for the switch interval while
    the loop and the threads take turns (on threads, a page of 100 took 19 to 29 ms at the
    median under bench/load.py's mix, against 3 to 5). So those run on the event loop, where
    the data root lies on a local disk or in memory. On a filesystem whose reads can wait on
    a server or a daemon (NFS, SMB, FUSE: the store's `reads_may_wait`), one read there
    stalled the whole server, /health and a SIGTERM's graceful stop included, for as long as
    the filesystem did (red team 23): there, and for a remote store, which waits on the
    network, they run on worker threads like every other call.
    """
    return (
        getattr(store, "reads_from_local_files", False) is True
        and getattr(store, "reads_may_wait", True) is False
    )


class HealthResponse:
    """The answer to ``GET /health``: the route's, and the HTTP protocol's, which answers it
    without the application (`app.server.protocol.bounded_h11`); an ASGI application.

    ``ok`` is rendered once (FastAPI validated and encoded it again on every probe;
    `response_model` still documents it). Once the store refuses every change (an fsync
    failed: `app.dataroot.fsync`) it is a 503 that says why, so that a monitor sees it and
    a supervisor that restarts an unhealthy server brings back the writes.
    """

    def __init__(self, config: Config, store: Storage | None = None) -> None:
        self.config = config
        self.ok = Response(
            Health(status="ok", profile=config.profile, version=__version__)
            .model_dump_json(exclude_none=True)
            .encode(),
            media_type="application/json",
        )
        # A data root's store (`app.store.Store.writes_stopped`), or a remote one refused
        # as read-only (`app.remote.store.RemoteStore.writes_stopped`).
        self._stopped: Callable[[], str | None] = lambda: getattr(store, "writes_stopped", None)

    def response(self) -> Response:
        reason = self._stopped()
        if reason is None:
            return self.ok
        health = Health(
            status="writes_stopped",
            profile=self.config.profile,
            version=__version__,
            reason=as_selected(reason),  # `app ...` with the server's --profile, as its log
        )
        return Response(
            health.model_dump_json().encode(), status_code=503, media_type="application/json"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.response()(scope, receive, send)


def add_session_routes(app: FastAPI, store: Storage, config: Config, auth: list[Any]) -> None:
    answer = HealthResponse(config, store)

    @app.get(
        "/health",
        tags=["server"],
        operation_id="health",
        response_model=Health,
        responses={
            503: {
                "model": Health,
                "description": "Writes stopped: an fsync failed, a directory of the data "
                "root was moved, its filesystem is read-only, or the database refused a "
                "change as read-only.",
            }
        },
    )
    async def health() -> Response:
        """Liveness: answers without a token. Says which profile runs, never where its data is.

        503 once the server refuses every change because an fsync failed on its data root
        (mend the disk, reboot, run `app data check`, then start it again), while a
        directory of the app's in it is moved or deleted by hand (put it back), or for a few
        seconds after the database refused a change as read-only (make it writable)."""
        return answer.response()

    @app.get(
        "/ready",
        tags=["server"],
        operation_id="ready",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "A backend does not answer."}},
    )
    async def ready() -> JSONResponse:
        """Readiness: answers without a token; 503 naming a backend that does not answer.

        From what the server already knows (the database: its replica's heartbeat; the
        object store: a probe at most every few seconds), so asking costs the backends
        nothing per request."""
        checks = store.readiness()
        problems = {name: problem for name, problem in checks.items() if problem is not None}
        body = Readiness(
            status="unready" if problems else "ready",
            profile=config.profile,
            version=__version__,
            checks={name: problem or "ok" for name, problem in checks.items()},
            message="; ".join(f"{name}: {problem}" for name, problem in problems.items()) or None,
        )
        return JSONResponse(
            body.model_dump(exclude_none=True), status_code=503 if problems else 200
        )

    # A store that makes creates in batches (the local one) gets them from threads of its
    # own (app.server.committer); a remote store's wait on the network, each on a worker
    # thread.
    create_many = getattr(store, "create_sessions", None)
    committer = None if create_many is None else Committer(create_many)
    app.state.committer = committer  # `serve` stops it, and waits for it, before its release

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
                "headers": LOCATION,
                "links": SESSION_LINKS,
            },
            **errors(400, 401, 411, 413, 415, 422, *STORAGE),
        },
        openapi_extra={
            "parameters": DIGEST_HEADERS,
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/SessionCreate"}}
                },
            },
        },
    )
    async def create_session(request: Request) -> JSONResponse:
        """Create a session (durably: fsync before the answer)."""
        body = await session_create(request)
        if committer is not None:
            session = await committer.create(body.title, body.metadata)
        else:
            session = await run_in_threadpool(store.create_session, body.title, body.metadata)
        # JSONResponse directly: the store's dict needs no second validation pass.
        return JSONResponse(
            session, status_code=201, headers={"Location": f"/sessions/{session['id']}"}
        )

    listing_slots = anyio.Semaphore(_LISTING_SLOTS)
    # Where they are read on the loop, app.server.direct answers most of them first.
    on_loop = reads_on_loop(store)

    @app.get(
        "/sessions",
        dependencies=auth,
        tags=["sessions"],
        operation_id="listSessions",
        response_model=None,
        responses={200: {"model": SessionPage}, **errors(400, 401, 422)},
    )
    async def list_sessions(
        limit: int = Query(default=config.page_size, ge=1, le=1000),
        after: str | None = Query(
            default=None,
            description="The `next` of the previous page.",
            json_schema_extra={"pattern": SESSION_ID_PATTERN},
        ),
    ) -> JSONResponse:
        """One page of sessions, oldest first, with the total and the next page's cursor.

        A page holds at most `limit` sessions, and stops early (with a `next` cursor) once its
        sessions take the server's `page_max_bytes` as JSON; it always holds at least one.
        """
        if on_loop and limit <= UNBOUNDED_PAGE:
            body = store.list_sessions_json(
                limit=limit, after=after, max_bytes=config.page_max_bytes
            )
            return EncodedJSON(body)
        # A large page reads and parses up to 1,000 session.json files, Python work that
        # holds the GIL: more of them at once on worker threads finish no sooner, but each
        # one delays the event loop's turn for the GIL (GET /health's p99 was about 70 ms
        # behind ten clients listing 1,000-item pages, 12 ms with two slots: bench/load.py).
        # The others wait here, without a thread.
        slot: contextlib.AbstractAsyncContextManager[Any]
        slot = listing_slots if limit > UNBOUNDED_PAGE else contextlib.nullcontext()
        async with slot:
            body = await run_in_threadpool(
                store.list_sessions_json, limit=limit, after=after, max_bytes=config.page_max_bytes
            )
        return EncodedJSON(body)

    @app.get(
        "/sessions/{session_id}",
        dependencies=auth,
        tags=["sessions"],
        operation_id="getSession",
        response_model=None,
        responses={200: {"model": Session}, **errors(400, 401, 404)},
    )
    async def get_session(session_id: SessionId) -> JSONResponse:
        """One session with its list of files."""
        if on_loop:
            return EncodedJSON(store.get_session_json(session_id))
        return EncodedJSON(await run_in_threadpool(store.get_session_json, session_id))

    @app.delete(
        "/sessions/{session_id}",
        dependencies=auth,
        tags=["sessions"],
        operation_id="deleteSession",
        response_model=None,
        responses={200: {"model": SessionDeleted}, **errors(400, 401, 404, *STORAGE)},
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
        response_model_exclude_none=True,
        responses=errors(400, 401, 403, 411, 422, *STORAGE),
    )
    def empty_trash(
        older_than: float | None = Query(
            default=None,
            ge=0,
            le=_MAX_AGE_SECONDS,
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
        said: dict[str, Any] = {"removed": len(removed), "entries": [e.name for e in removed]}
        if isinstance(removed, Emptied) and removed.finished:
            # Sent again after one whose audit line a full disk refused, it answered
            # "removed": 0 of the entries whose removal it had just finished, audited (red
            # team 74 on regress): the command said so, the route did not.
            said["finished"] = list(removed.finished)
        return said
