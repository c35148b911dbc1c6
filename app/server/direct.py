"""The two reads the server answers most, answered before FastAPI routes them (`DirectReads`).

``GET /sessions/{id}`` and ``GET /sessions?limit=N`` (N up to 100), where the store answers
them on the event loop from bytes it keeps encoded (`app.server.routes_sessions.reads_on_loop`),
cost the store tens of microseconds; FastAPI's way to them cost several times that on the
event loop (about 140 of a get's 390 us of server CPU under ``bench/request_cpu.py``,
bench/README.md, branch perf22): the exception middleware, three ``AsyncExitStack``\\ s, the
router's linear match, a ``Request``, the route's checks (`app.server.auth.TokenRoute`),
dependency solving for one path or query parameter, and about a dozen coroutine layers. Every
step a request adds to the event loop's turn is a step every request behind it, and ``GET
/health``, waits for.

Only a request FastAPI's route would answer from the store, with nothing for its checks to
refuse, is answered here, with what the route would send (the same bytes, the same
`app.server.routes_sessions.EncodedJSON` response): the token right, no query parameter but
those the route takes, each once, a limit in plain digits, no precondition header, no body
(``Content-Length: 0`` is none). Everything else goes on to FastAPI unchanged, which refuses
it as before. An error of the store (an unknown or malformed id, a stopped root) is left to
FastAPI too: the read is done again there, and answered and logged by its handlers, so an
error is never answered two ways. The routes stay FastAPI's: the OpenAPI document, the docs
and every other request go through them.
"""

from __future__ import annotations

import hmac
import re
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl

from app.digests import FIELDS, LEGACY_FIELDS
from app.server.auth import bearer_credentials
from app.server.routes_files import PRECONDITIONS
from app.server.routes_sessions import UNBOUNDED_PAGE, EncodedJSON

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.types import ASGIApp, Receive, Scope, Send

    from app.config import Config
    from app.storage import Storage

#: A session's path, as the route takes it when its id is well formed (`SESSION_ID_PATTERN`).
_SESSION_PATH: Final = re.compile("/sessions/([0-9a-f]{32})")
#: Headers that send the request on to FastAPI: a chunked body (`app.server.auth.refuse_body`),
#: a precondition (`app.server.auth.ignored_preconditions`), an integrity field, which names
#: the bytes of a body that may have been lost on the way (`app.server.auth.refuse_lost_body`:
#: answered here, a get whose ``Content-Digest`` named some bytes was a 200, while the same
#: request of a session's files was refused, red team 66 on regress, rt-regress66c).
#: ``Content-Length: 0`` (which some clients send with every request) is no body, as
#: `refuse_body` reads it; any other length goes on too.
_FOR_FASTAPI: Final = frozenset(
    {
        b"transfer-encoding",
        *(name.lower().encode() for name in (*PRECONDITIONS, *FIELDS, *LEGACY_FIELDS)),
    }
)


class DirectReads:
    """Pure ASGI middleware: a get or a page of up to 100 answered without FastAPI's route.

    It sits inside `app.server.limits.RequestGuard` (so a path or a header it refuses never
    gets here, and a ``HEAD`` comes as the ``GET`` it is answered as) and outside FastAPI's
    exception middleware and router.
    """

    __slots__ = ("app", "page_max_bytes", "page_size", "store", "token")

    def __init__(self, app: ASGIApp, store: Storage, config: Config) -> None:
        self.app = app
        self.store = store
        self.token = config.api_token.encode() if config.api_token else None
        self.page_size = config.page_size
        self.page_max_bytes = config.page_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            body = self._answer(scope)
            if body is not None:
                await EncodedJSON(body)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _answer(self, scope: Scope) -> bytes | None:
        """The route's body for this request, or ``None`` to leave the request to FastAPI."""
        path: str = scope["path"]
        read: Callable[[], bytes] | None
        if path == "/sessions":
            read = self._page(scope["query_string"])
        elif (match := _SESSION_PATH.fullmatch(path)) is not None and not scope["query_string"]:
            session_id = match.group(1)

            def read() -> bytes:
                return self.store.get_session_json(session_id)

        else:
            return None
        if read is None or not self._plain(scope["headers"]):
            return None
        try:
            return read()
        except Exception:
            # Read-only: FastAPI's route reads it again, and answers and logs the error as
            # it always has (an unknown id, a malformed one, a stopped root, an I/O error).
            return None

    def _page(self, query: bytes) -> Callable[[], bytes] | None:
        """A page's read, if its query is one the route takes as it is (`refuse_query`)."""
        limit, after = self.page_size, None
        if query:
            # As Starlette reads it (latin-1, blank values kept): the values FastAPI passes.
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            names = [name for name, _ in pairs]
            if len(set(names)) != len(names) or not set(names) <= {"limit", "after"}:
                return None
            for name, value in pairs:
                if name == "after":
                    after = value
                elif value.isascii() and value.isdigit() and len(value) <= 4:
                    # Longer, it is no limit the route takes, and FastAPI's route says so:
                    # int() of more than 4300 digits raised here, a 500 (red team 60).
                    limit = int(value)
                else:
                    return None
        if not 1 <= limit <= UNBOUNDED_PAGE:
            return None
        max_bytes = self.page_max_bytes
        return lambda: self.store.list_sessions_json(limit=limit, after=after, max_bytes=max_bytes)

    def _plain(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """The token is right, and no header asks for a check of FastAPI's route."""
        authorization = None
        for name, value in headers:
            if name in _FOR_FASTAPI:
                return False
            if name == b"content-length" and value.strip(b"0 "):
                return False
            if name == b"authorization":
                authorization = value
        if self.token is None:
            return True
        # As the route reads it (`app.server.auth._BearerToken`), a header as Starlette's.
        given = bearer_credentials(
            None if authorization is None else authorization.decode("latin-1")
        )
        return given is not None and hmac.compare_digest(given.encode(), self.token)
