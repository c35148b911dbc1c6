"""The ASGI middleware that refuses a request before any route does its work.

The request's head, body and response are bounded by the HTTP protocol
(`app.server.protocol`), where it is known whether a wait is coming at all; this refuses what
the path says, and ends quietly a request whose response the protocol abandoned.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import InvalidNameError
from app.server.problems import problem_of
from app.server.protocol import SlowReader


class RequestGuard:
    """Answer 400 to a path that is not UTF-8 once percent-decoded, before any route runs.

    The HTTP server decodes such a path with replacement: ``a%FF`` and ``a%FE`` both became
    ``a\\ufffd``, one name for two different files. A name must be valid text.

    A response whose client read nothing of it for ``request_idle_seconds`` (`SlowReader`,
    logged by the protocol) ends the request here without a traceback: the answer has
    begun, so nothing more can be said to this client, and uvicorn closes a connection whose
    response the application left unfinished. One middleware for both: each layer is paid
    on every request.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        # Without a percent sign an ASCII path is its own UTF-8 (h11 admits ASCII only).
        if raw and (b"%" in raw or not raw.isascii()):
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
        try:
            await self.app(scope, receive, send)
        except SlowReader:
            return  # logged by the protocol; uvicorn closes the connection
