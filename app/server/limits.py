"""The ASGI middleware that refuses a request before any route does its work, or queues it.

The request's head, body and response are bounded by the HTTP protocol
(`app.server.protocol`), where it is known whether a wait is coming at all; this refuses what
the path says, lets a few uploads and downloads at a time be worked on (`Turn`), and ends
quietly a request whose response the protocol abandoned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final
from urllib.parse import unquote, unquote_to_bytes

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import BadRequestError, InvalidNameError, RequestCutShortError
from app.server.problems import problem_of
from app.server.protocol import TURN, Abandoned

log = logging.getLogger(__name__)

QUANTUM: Final = 0.02
"""How long a transfer keeps its place while others wait, at most, if its client never waits.

Twenty milliseconds: a 4 KiB upload or download is done well within it (about 3 ms of the
server's time), and a large one gives its place up about fifty times a second.
"""


class Turn:
    """One transfer's place among those the server works on at once (``max_transfers_at_once``).

    Every request is a task on one event loop, and the worker threads it hands its file work
    to share one interpreter lock with that loop. Each transfer in progress adds its steps to
    every turn of the loop, and the small calls (create, get, list, delete) wait for them all:
    under ``bench/load.py``'s 50 clients, with every transfer at once, a create waited about
    100 ms at the median. With a few at a time, the others wait without costing anything,
    and the small calls and ``GET /health`` pass between them (docs/reference/performance.md).

    A transfer gives its place up while it waits for its client (`app.server.protocol`), so a
    client that sends or reads slowly holds none: it cannot keep the others waiting. One
    whose client never makes it wait (a large upload over a fast link) gives its place up
    after `QUANTUM` seconds when others wait for one (`yield_if_others_wait`), so a 4 KiB
    download waits for a slice of a 100 MiB upload, not for all of it. Either way it queues
    behind those that came meanwhile when it goes on. Transfers are queued, never refused,
    in the order they came; ``max_uploads_in_flight`` still bounds the uploads received at
    once (503 beyond).
    """

    __slots__ = ("_entering", "_held", "_places", "_since")

    def __init__(self, places: anyio.Semaphore) -> None:
        self._places = places
        self._held = False
        self._entering = False
        self._since = 0.0

    async def enter(self) -> None:
        # One place per request: a second task of it that waits for its client at the same
        # time goes on with the first's (it would otherwise wait for a place of its own,
        # which, with one place, only its own request could give back).
        if self._held or self._entering:
            return
        self._entering = True
        try:
            await self._places.acquire()
        finally:
            self._entering = False
        self._held = True
        self._since = time.monotonic()

    def leave(self) -> None:
        if self._held:
            self._held = False
            self._places.release()

    async def yield_if_others_wait(self) -> None:
        """After `QUANTUM` seconds in its place, give it to a waiting transfer and queue again."""
        if (
            self._held
            and time.monotonic() - self._since > QUANTUM
            and self._places.statistics().tasks_waiting
        ):
            self.leave()
            await self.enter()


ONCE_ONLY: Final = frozenset(
    {
        b"authorization",
        b"content-digest",
        b"content-md5",
        b"content-type",
        b"digest",
        b"if-match",
        b"if-modified-since",
        b"if-none-match",
        b"if-range",
        b"if-unmodified-since",
        b"range",
        b"repr-digest",
    }
)
"""Headers a request may carry once, of those the app reads.

Two of one are ambiguous: the app reads the first, and a proxy or a gateway in front may have
checked the other (another token, another media type, another condition). ``If-Match`` and
``If-None-Match`` are lists, which RFC 9110 lets a sender split over lines, but a gateway that
reads only one line would see a different condition: one line is asked for. So are
``Repr-Digest`` and ``Content-Digest`` (dictionaries, RFC 9651): of two lines naming two
SHA-256s, the app would check one, and another reader the other. ``Content-Length``
and ``Transfer-Encoding`` are h11's: two different lengths are refused there, two equal ones
are one length (RFC 9110, 8.6); so is ``Host``, which h11 refuses twice (RFC 9112, 3.2).
"""


#: What else the app or its HTTP server reads, for `underscored_header`.
_READ: Final = ONCE_ONLY | {
    b"content-encoding",
    b"content-length",
    b"content-range",
    b"expect",
    b"transfer-encoding",
}


def underscored_header(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The first header spelt with ``_`` for ``-`` that the app reads as ``-`` (``If_Match``).

    h11 takes it as another header, which the app never reads, so ``DELETE`` with
    ``If_Match: "<another version>"`` deleted the file; a CGI or WSGI gateway in front turns
    both spellings into one variable (``HTTP_IF_MATCH``), which is why nginx drops such
    headers by default. One request, two meanings: refused.
    """
    for name, _ in headers:
        if b"_" in name and name.replace(b"_", b"-") in _READ:
            return name
    return None


#: Methods a page of another site may have a browser send (Fetch Metadata's cross-site
#: refusal spares them: they change nothing, and a link to a download from elsewhere works).
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
#: What `Sec-Fetch-Site` says of a request a page of another origin's site made.
_OTHER_SITES: Final = frozenset({b"cross-site", b"same-site"})


def _fetched_from(headers: list[tuple[bytes, bytes]]) -> str | None:
    """``cross-site`` or ``same-site``, where a browser's ``Sec-Fetch-Site`` says a page of
    another origin made the request; None otherwise (no such field: not a browser, or one
    from before Fetch Metadata)."""
    for name, value in headers:
        if name == b"sec-fetch-site":
            site = value.strip().lower()
            return site.decode("ascii") if site in _OTHER_SITES else None
    return None


def _refused_site(scope: Scope, headers: list[tuple[bytes, bytes]]) -> BadRequestError | None:
    """Why a change a browser sent from a page of another site is refused, if it is one."""
    if scope["method"] in _SAFE_METHODS or (site := _fetched_from(headers)) is None:
        return None
    # A page of another site, in a browser, sends a POST without CORS's preflight (a
    # form, `fetch` with `mode: 'no-cors'`): its answer is hidden from it, but the
    # request is done. A page at http://localhost:3000 emptied a development server's
    # trash so (`POST /trash/empty`, no token to send), every replaced file's old
    # version with it (red team 76 on the server). The browser says where a request
    # comes from (Fetch Metadata), whatever the proxies in front; a program sends no
    # such field, and the API's own page (/docs) is the same origin.
    return BadRequestError(
        f"{scope['method']} {scope['path']} refused: a browser sent it from a page of "
        f"another origin (Sec-Fetch-Site: {site}), which a page the user only visited can "
        "do without the user's knowing, and this API takes no change from a page of "
        "another origin. Nothing was done. Make the change from a program (curl, a "
        "client library) or from the API's own page (/docs); reads (GET, HEAD) are "
        "served to any page"
    )


def repeated_header(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The first of `ONCE_ONLY` that ``headers`` (lower-case names, as h11 gives them) repeat."""
    seen: set[bytes] = set()
    for name, _ in headers:
        if name in ONCE_ONLY:
            if name in seen:
                return name
            seen.add(name)
    return None


def is_file(scope: Scope) -> bool:
    """Whether the path is a file's, ``/sessions/{id}/files/{name}``."""
    path: str = scope["path"]
    return (
        path.startswith("/sessions/") and path.count("/") >= 4 and path.split("/", 4)[3] == "files"
    )


def is_transfer(scope: Scope) -> bool:
    """Whether the request uploads or downloads a file's bytes.

    ``PUT``, ``GET`` or ``HEAD`` of ``/sessions/{id}/files/{name}``, and ``POST`` of
    ``/sessions/{id}/files``. Listing a session's files and deleting one are small calls.
    """
    path: str = scope["path"]
    if not path.startswith("/sessions/"):
        return False
    parts = path.split("/", 5)  # "", "sessions", id, "files", name...
    if len(parts) < 4 or parts[3] != "files":
        return False
    if len(parts) == 4:
        return bool(scope["method"] == "POST")
    return scope["method"] in ("PUT", "GET", "HEAD")


def origin_form(scope: Scope) -> Scope:
    """``scope`` with its path as a request in origin form (``/sessions``) names it, where the
    request line named its target in absolute form (``GET http://host/sessions``).

    RFC 9112 (3.2.2) asks a server to accept that form, which a client sends to a proxy and
    some proxies forward as they got it. uvicorn took the whole URL for the path: every such
    request was a 404 "no route /http://host/sessions" (red team 70 on the HTTP contract).
    The authority goes: the app reads no ``Host``.

    Changed in place, not copied: the protocol sets what it learns after the head on the
    request's own scope (a chunked body's trailer, `app.server.protocol.TRAILERS`) and reads
    the request's place among the transfers there (``TURN``), and uvicorn's access log reads
    the path there. A copy kept the trailer from the route: ``PUT http://host/...`` with a
    wrong ``Repr-Digest`` in a trailer that came once the body was being read was stored,
    201 (red team 70 on regress).
    """
    raw: bytes = (scope.get("raw_path") if scope["type"] == "http" else None) or b""
    scheme, _, rest = raw.partition(b"://")
    if not rest or scheme.lower() not in (b"http", b"https"):
        return scope
    path = b"/" + rest.partition(b"/")[2]
    # As uvicorn decodes a path (its h11 protocol); `_refused_path` then checks the bytes.
    scope["raw_path"], scope["path"] = path, unquote(path.decode("ascii"))
    return scope


def _refused_path(raw: bytes) -> InvalidNameError | None:
    """Why a percent-encoded path names nothing, or ``None``.

    An encoded ``/`` (``%2F``): no id or name holds one, and the router reads it as a
    separator where a proxy in front reads one segment (another route to each).

    Not UTF-8: the HTTP server decodes with replacement, so ``a%FF`` and ``a%FE`` were one
    name. A control character (``%0A``, ``%00``, ``%7F``): Starlette's route patterns end in
    ``$``, which matches before a final newline, and a ``{name:path}`` is ``.*``, which stops
    at one. ``PUT /sessions/<id>/files/ab%0A`` replaced, and ``DELETE`` deleted, the file
    ``ab``; ``a%0Ab`` was a 404 naming ``/files/ab``. No name holds one (`check_file_name`),
    so the whole path is refused before any route reads it.
    """
    try:
        path = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError as error:
        return InvalidNameError(
            "path",
            raw.decode("ascii", "backslashreplace"),
            f"it is not valid UTF-8 once percent-decoded (byte "
            f"0x{error.object[error.start]:02X}); percent-encode the name's UTF-8 bytes",
        )
    if b"%2f" in raw.lower():
        # No session id or file name holds a '/', yet the router matches the decoded path:
        # `POST /trash%2Fempty` emptied the trash and `DELETE /sessions/<id>%2Ffiles%2Fa`
        # deleted a file, each one segment to a proxy in front that matches the path as sent.
        return InvalidNameError(
            "path",
            raw.decode("ascii", "backslashreplace"),
            "it holds '%2F', a percent-encoded path separator, which no session id or file "
            "name holds: a proxy in front reads it as part of one segment and this server's "
            "router as a '/', so the two would run different routes; nothing was done. Send "
            "'/' between the path's parts as it is",
        )
    control = next((c for c in path if c < " " or "\x7f" <= c <= "\x9f"), None)
    if control is None:
        return None
    return InvalidNameError(
        "path",
        raw.decode("ascii", "backslashreplace"),
        f"it contains the control character U+{ord(control):04X} once percent-decoded, which "
        "no session id or file name holds; nothing was done",
    )


def _refused_target(scope: Scope) -> BadRequestError | None:
    """Why a request's target is refused (one not a path, or holding a '#'), if it is."""
    target = (scope.get("raw_path") or b"/").decode("ascii", "backslashreplace")
    if not target.startswith("/"):
        # Asterisk form (`OPTIONS *`, RFC 9112, 3.2.4) asks about the server as a whole, and
        # authority form (`CONNECT host:443`, 3.2.3) is a proxy's; `origin_form` has already
        # turned the absolute form into a path. Each was a 404 "no route /*" or "no route
        # /127.0.0.1:80", naming a path the client never sent (red team 74 on the HTTP
        # contract).
        form = "asterisk form" if target == "*" else "authority form, or no path at all"
        return BadRequestError(
            f"{scope['method']} {target} refused: its target is not a path ({form}); this "
            "server is no proxy and answers requests for its own paths alone, which start "
            "with '/'. Nothing was done. Send a path, such as GET /sessions; GET /docs lists "
            "the API"
        )
    if "#" in target or b"#" in scope.get("query_string", b""):
        # RFC 9112 (3.2) has no fragment in a request target, and RFC 3986 (3.5) starts one
        # at '#': h11 took it, and `PUT .../files/a#b` stored 'a#b' where a proxy or a client
        # library in front that cuts the fragment reads `.../files/a` (red team 74 on the
        # HTTP contract), the %2F class of `_refused_path`.
        return BadRequestError(
            f"{scope['method']} {scope['path']} refused: its target holds a '#', which starts "
            "a fragment (RFC 3986, 3.5) that a request target never holds (RFC 9112, 3.2): a "
            "proxy in front may have cut the target there, where this server would read it "
            "whole. Nothing was done. Percent-encode a '#' of a name as %23"
        )
    return None


def refused_head(scope: Scope) -> BadRequestError | None:
    """Why a request's head is refused before any route reads it, if it is."""
    headers = scope["headers"]
    if (twice := repeated_header(headers)) is not None:
        shown = "-".join(part.capitalize() for part in twice.decode("ascii").split("-"))
        return BadRequestError(
            f"request refused: it has more than one {shown} header. A proxy or a gateway "
            "in front may have read one and this server the other, so which one counts "
            f"is ambiguous; nothing was done. Send {shown} once"
            + (" (its entity tags as one comma-separated list)" if b"if-" in twice else "")
        )
    if (odd := underscored_header(headers)) is not None:
        meant = "-".join(p.capitalize() for p in odd.decode("ascii").split("_"))
        return BadRequestError(
            f"request refused: it has a header {odd.decode('ascii')!r}, which is not "
            f"{meant}: this server reads only {meant}, and a gateway in front may take one "
            f"for the other (CGI and WSGI name both HTTP_{odd.decode('ascii').upper()}); "
            f"nothing was done. Send {meant}, with '-'"
        )
    if (target := _refused_target(scope) or _refused_site(scope, headers)) is not None:
        return target
    version: str = scope["http_version"]
    if not version.startswith("1."):
        # h11 reads any `HTTP/d.d` and frames it as HTTP/1.1: `PUT ... HTTP/2.0` (or 0.9)
        # with chunks was stored (red team 70 on regress), where HTTP/2 has no such line and
        # no Transfer-Encoding (RFC 9113, 8.2.2), and HTTP/0.9 no headers at all. A proxy in
        # front that read the version would have framed the request otherwise.
        return BadRequestError(
            f"{scope['method']} {scope['path']} refused: its request line says HTTP/{version}, "
            "and this server speaks HTTP/1.1 (and 1.0) alone, so how the request is framed is "
            "ambiguous. Nothing was done, and the connection is closed. Send it as HTTP/1.1"
        )
    if version == "1.0" and any(n == b"transfer-encoding" for n, _ in headers):
        # RFC 9112 (6.1): HTTP/1.0 has no transfer coding, and a recipient MUST take such a
        # request's framing for faulty. h11 read its chunks, and a PUT was stored (red team
        # 70 on the HTTP contract) where a proxy in front that speaks HTTP/1.0 framed the
        # body by its Content-Length, or by the connection's end, and passed other bytes.
        return BadRequestError(
            f"{scope['method']} {scope['path']} refused: it is HTTP/1.0 with a "
            "Transfer-Encoding, which HTTP/1.0 does not have (RFC 9112, 6.1, calls its framing "
            "faulty): a proxy in front may have framed its body otherwise. Nothing was done, "
            "and the connection is closed. Send it as HTTP/1.1, or with a Content-Length alone"
        )
    return None


class RequestGuard:
    """Answer 400 to a path that is not UTF-8 or holds a control character once
    percent-decoded (`_refused_path`), or to a header of `ONCE_ONLY` given twice, before any
    route runs.

    A ``HEAD`` is routed as the ``GET`` of its path, but for a file's (which has its own).

    The HTTP server decodes such a path with replacement: ``a%FF`` and ``a%FE`` both became
    ``a\\ufffd``, one name for two different files. A name must be valid text.

    A response whose client read nothing of it for ``request_idle_seconds`` (`SlowReader`,
    logged by the protocol), or a download found damaged before its last byte (`Abandoned`,
    logged by `app.server.downloads`), ends the request here without a traceback: the answer has
    begun, so nothing more can be said to this client, and uvicorn closes a connection whose
    response the application left unfinished.

    A request that uvicorn cancels, past the shutdown grace of a server told to stop, is
    answered 503 `RequestCutShortError` if its answer has not begun (uvicorn's own is a bare
    "Internal Server Error"). One middleware for all three: each layer is paid on every
    request.
    """

    def __init__(
        self, app: ASGIApp, transfers_at_once: int | None = None, shutdown_grace: int = 30
    ) -> None:
        self.app = app
        self.shutdown_grace = shutdown_grace
        self.places = (
            None
            if transfers_at_once is None
            else anyio.Semaphore(transfers_at_once, fast_acquire=True)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope = origin_form(scope)
        if scope["type"] == "http" and (faulty := refused_head(scope)) is not None:
            # HTTP/1.0 (and 0.9) connections close after the answer; another version's would
            # stay open for bytes framed as its own (`refused_head`).
            other = not scope["http_version"].startswith("1.")
            closing = {"Connection": "close"} if other else None
            await problem_of(faulty, closing)(scope, receive, send)
            return
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        # Without a percent sign an ASCII path is its own UTF-8 (h11 admits ASCII only).
        if raw and (b"%" in raw or not raw.isascii()):
            refused = _refused_path(raw)
            if refused is not None:
                await problem_of(refused)(scope, receive, send)
                return
        turn = None
        if self.places is not None and scope["type"] == "http" and is_transfer(scope):
            turn = scope[TURN] = Turn(self.places)
            await turn.enter()
        elif scope.get("method") == "HEAD" and not is_file(scope):
            # RFC 9110, 9.1: every GET route answers HEAD. FastAPI routes GET alone, and a
            # monitor's `HEAD /health` was a 405. The route answers as to a GET; uvicorn,
            # which reads the method from its own scope, sends the headers and no body.
            # A file's HEAD has a route of its own, which does not read the file.
            scope = {**scope, "method": "GET"}
        try:
            await self.app(scope, receive, send)
        except Abandoned:
            return  # logged where raised; uvicorn closes the connection
        except asyncio.CancelledError as cancelled:
            # Only the server's shutdown cancels a request's task (a disconnected client is
            # told by `receive`). Answered, the request is over: uvicorn has already logged
            # why it cancelled. If the answer had begun, sending another start fails, and
            # uvicorn closes the connection.
            if scope["type"] != "http":
                raise
            # A second SIGINT (uvicorn's force quit) cancels before the grace has passed:
            # the server says so through the application's state (`app.server.run`).
            state = getattr(scope.get("app"), "state", None)
            forced = getattr(state, "stop_forced", None)
            cut = RequestCutShortError(
                scope["method"], scope["path"], self.shutdown_grace, bool(forced and forced())
            )
            try:
                await problem_of(cut, {"Connection": "close"})(scope, receive, send)
            except Exception:
                raise cancelled from None
            log.warning("%s", cut)
        finally:
            if turn is not None:
                turn.leave()
