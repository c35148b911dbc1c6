"""ASGI middlewares that refuse a request before any route does its work.

The request's head is bounded earlier, by the HTTP protocol (`app.server.protocol`); these
bound what follows it: how long the body and the response may take, and what the path says.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import InvalidNameError, RequestTimeoutError
from app.server.problems import problem_of

log = logging.getLogger(__name__)


class _SlowReader(Exception):
    """The client read nothing of the response for ``request_idle_seconds``."""


class BoundRequestBodies:
    """Cut off a client that stops sending its request or reading its response.

    Every wait for a piece of the body is bounded by ``request_idle_seconds``, and the whole
    request by ``request_seconds`` from the moment its head arrived: 408 ``request_timeout``,
    then the connection closes. 150 slow uploads once held the server's file descriptors for
    ever, and other clients got 500. The route sees the refusal as an error from ``receive``,
    so it cleans up as for any other (an upload's temporary file is removed). Once the body is
    complete, ``receive`` is not bounded (it waits for a disconnect).

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


class RefuseUndecodablePaths:
    """Answer 400 to a path that is not UTF-8 once percent-decoded, before any route runs.

    The HTTP server decodes such a path with replacement: ``a%FF`` and ``a%FE`` both became
    ``a\\ufffd``, one name for two different files. A name must be valid text.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if raw:
            try:
                unquote_to_bytes(raw).decode("utf-8")
            except UnicodeDecodeError as error:
                refused = InvalidNameError(
                    "path",
                    raw.decode("ascii", "backslashreplace"),
                    f"it is not valid UTF-8 once percent-decoded (byte "
                    f"0x{error.object[error.start]:02X}); percent-encode the name's UTF-8 bytes",
                )
                await problem_of(refused)(scope, receive, send)
                return
        await self.app(scope, receive, send)
