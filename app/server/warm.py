"""`warm_up`: the first request of each kind paid for before the socket is served; and
`SessionWarmer`: the sessions' answers made and kept in the background once it is.

A fresh server built some of its machinery on the first request that needed it, on the event
loop, while every other request waited: Starlette builds the middleware stack on its first
call (with it the transfers' semaphore, which imports anyio's asyncio backend, ~11 ms);
FastAPI reads each route's source file with `inspect.getsourcelines` on the route's first
request, for the context of its error messages (~13 ms for the first, a few for each next);
the first hop to a worker thread, the first problem answer and the first validation error
import what they use. Under `bench/load.py` the fifty clients' first calls all met that at
once. `serve` runs this inside its event loop before uvicorn serves the socket, so a
server that answers is ready.

Only reads and refusals: nothing here writes to the data root or takes a hold. Each call
goes through the application exactly as a request would (the token, the middlewares, the
error handlers), in process, with no socket, so no client sees it and no access log line is
written.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.to_thread
from fastapi.routing import APIRoute

from app.errors import thread_limit, thread_limits

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message

    from app.config import Config
    from app.storage import Storage

log = logging.getLogger(__name__)

# A well-formed id that no session has (ids are UUIDv7, whose version digit is 7:
# `app.store.ids`): its get is a 404, answered through the problem handlers.
_NO_SESSION: Final = "0" * 32
# (method, path, query, body): a read and four refusals, each before any write.
_CALLS: Final = (
    ("GET", "/health", b"", b""),
    ("GET", "/sessions", b"limit=1", b""),
    ("GET", f"/sessions/{_NO_SESSION}", b"", b""),
    # pydantic's validation of a create's body, refused (422) before the store is called
    ("POST", "/sessions", b"", b'{"title": "warm-up", "metadata": []}'),
    # a path parameter refused by FastAPI's validation (422) before the route's work
    ("DELETE", "/sessions/warm-up", b"", b""),
)
_THREADS_WAIT_SECONDS: Final = 10.0
#: Sessions whose answers the background warm-up makes (the oldest first): the watch's
#: allowance (`app.store.watch`, three watches a session) is about this many.
WARM_SESSIONS: Final = 4000
#: The second pass waits this long, for the sessions the first found changed in the last two
#: seconds, which are not kept yet (`app.store.records.MetaCache.settled`).
_SETTLE_SECONDS: Final = 2.5


async def warm_up(application: ASGIApp, app: Any, config: Config) -> list[str]:
    """Send the application a read and a few refusals, touch every route, and start the
    worker threads, in process.

    Args:
        application: the application as uvicorn serves it (its own wrappers included).
        app: the FastAPI application inside it, whose routes are primed.
        config: the served configuration (its token, if any, goes with the calls).

    Returns:
        What each call was answered, as ``"GET /health 200"`` (logged at debug level).
    """
    _prime_endpoint_contexts(app)
    answered = []
    for method, path, query, body in _CALLS:
        status = await _call(application, config, method, path, query, body)
        answered.append(f"{method} {path} {status}")
    await _start_worker_threads()
    log.debug("warm-up: %s", "; ".join(answered))
    return answered


async def _start_worker_threads() -> None:
    """Start every worker thread anyio's default limiter allows, and keep them.

    anyio starts a worker thread when a call finds none idle, with `Thread.start` on the
    event loop, which waits until the new thread holds the interpreter lock. Under
    `bench/load.py`'s start, forty such starts came in one pass of the loop while the
    threads already started held the lock in turn: the loop stood still for 224 and 263 ms
    (a timer probe in the server), and every request with it. Started here, before anything
    contends, they cost a few ms.

    anyio stops every worker idle for ten seconds (`WorkerThread.MAX_IDLE_TIME`) when the
    next call comes, so a server quiet for ten seconds met its next burst with one thread:
    they are kept instead (idle threads wait on a queue; anyio still stops them when the
    event loop ends). anyio has no setting for either; if a release renames the attribute,
    the threads are started but may be stopped again, as before.
    """
    with contextlib.suppress(ImportError):
        from anyio._backends import _asyncio

        if isinstance(getattr(_asyncio.WorkerThread, "MAX_IDLE_TIME", None), int | float):
            _asyncio.WorkerThread.MAX_IDLE_TIME = math.inf  # type: ignore[assignment]
    threads = int(anyio.to_thread.current_default_thread_limiter().total_tokens)
    # Each call waits until all have begun, so that each has a thread of its own; bounded,
    # so that a thread that never came would only cost the wait.
    together = threading.Barrier(threads)

    refused: list[str] = []

    def meet() -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            together.wait(_THREADS_WAIT_SECONDS)

    async def start_one() -> None:
        try:
            await anyio.to_thread.run_sync(meet)
        except RuntimeError as error:
            # At the process's limit of threads (red team 34): the server serves with those
            # it has, and a request that needs one more is refused 503 thread_limit.
            if thread_limit(error, "") is None:
                raise
            refused.append(str(error))
            together.abort()  # those started stop waiting for the others

    async with anyio.create_task_group() as group:
        for _ in range(threads):
            group.start_soon(start_one)
    if refused:
        log.warning(
            "warm-up: %d of %d worker threads could not start (%s): the process is at its "
            "limit of threads (%s); requests that need another thread are refused 503 "
            "thread_limit meanwhile",
            len(refused),
            threads,
            refused[0],
            thread_limits(),
        )


def _prime_endpoint_contexts(app: Any) -> None:
    """Fill FastAPI's per-endpoint context cache (the source file and line it names in
    errors), which it fills on each route's first request by reading the route's source.

    A private function of FastAPI's: if a release renames it, nothing is primed and the
    routes pay on their first request, as before (tests/test_server_warm_up.py says so).
    """
    from fastapi import routing

    extract = getattr(routing, "_extract_endpoint_context", None)
    if extract is None:
        return
    for route in app.routes:
        if isinstance(route, APIRoute):
            extract(route.dependant.call)


async def _call(
    application: ASGIApp, config: Config, method: str, path: str, query: bytes, body: bytes
) -> int:
    headers = [(b"host", b"127.0.0.1"), (b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", b"application/json"))
    if config.api_token:
        headers.append((b"authorization", f"Bearer {config.api_token}".encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
        "state": {},
    }
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0

    async def receive() -> Message:
        return pending.pop() if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await application(scope, receive, send)
    return status


def worker_threads_at_work() -> int | None:
    """How many of anyio's worker threads run a call now (called in the event loop).

    `serve` logs it when it waits for them at shutdown: the warm-up's threads are kept, so
    counting live threads would count the idle ones too. anyio's own record of its workers
    and of the idle ones (private: ``None`` if a release renames it).
    """
    try:
        from anyio._backends import _asyncio

        workers = _asyncio._threadpool_workers.get()
        idle = _asyncio._threadpool_idle_workers.get()
    except (ImportError, AttributeError):
        return None
    except LookupError:
        return 0  # no call ever went to a thread in this loop
    return len(set(workers) - set(idle))


class SessionWarmer:
    """Read each session's answer once in the background, so that the first pages clients
    ask for are answered from kept bytes (`app.store.sessions.Sessions._encoded`).

    Under `bench/load.py` the first pages of 100 read every session cold (its files parsed,
    its JSON encoded, its watches added), tens of ms each on the event loop, in the first
    seconds when fifty clients start at once. This reads up to `WARM_SESSIONS` of them, the
    oldest first (the first page every client that pages starts from), on a thread of its
    own, after the socket is served; again once the settling time has passed, for those
    changed just before the start (kept only once settled). Reads only, through the
    store's own checked path: what it keeps is what a request would have kept. A local
    store only; stopped with the server.
    """

    def __init__(self, store: Storage, limit: int = WARM_SESSIONS) -> None:
        self.store = store
        self.limit = limit
        self.read = 0  # answers read, over both passes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="app-session-warmer", daemon=True)

    def start(self) -> SessionWarmer:
        # The local store (the remote one keeps no answers, and lists no ids without a page)
        if getattr(self.store, "reads_from_local_files", False) is True and callable(
            getattr(self.store, "session_ids", None)
        ):
            try:
                self._thread.start()
            except RuntimeError as error:  # a warm-up not made costs the first reads only
                if thread_limit(error, "") is None:
                    raise
                log.warning("session warm-up not started: %s", error)
        return self

    def stop(self) -> None:
        """Stop reading, and return once the thread has (at most a session's read)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        try:
            ids: list[str] = self.store.session_ids()[: self.limit]  # type: ignore[attr-defined]
            self.warm(ids)
            if not self._stop.wait(_SETTLE_SECONDS):
                self.warm(ids)
        except Exception:  # a warm-up that failed costs the first requests, nothing more
            log.debug("session warm-up stopped", exc_info=True)

    def warm(self, ids: list[str]) -> None:
        from app.errors import AppError

        for n, session_id in enumerate(ids):
            if self._stop.is_set():
                return
            with contextlib.suppress(AppError):  # gone since, or damaged: a read says so
                self.store.get_session_json(session_id)
                self.read += 1
            if n % 50 == 49:
                time.sleep(0.001)  # let the event loop take the interpreter lock
