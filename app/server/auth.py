"""The bearer token every route but ``/health`` and the API's own docs require, when set."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
from collections.abc import Callable, Coroutine, Mapping
from difflib import get_close_matches
from typing import TYPE_CHECKING, Any, Final, get_args
from urllib.parse import parse_qsl

from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from app.digests import Digests
from app.errors import BadRequestError, DigestMismatchError
from app.requester import REQUESTER, USER_AGENT_CHARS
from app.server.routes_files import PRECONDITIONS, unsupported_precondition
from app.server.uploads import client_named, refuse_unframed_body, trailer_of

if TYPE_CHECKING:
    from fastapi.dependencies.models import Dependant

    from app.config import Config


class _BearerToken(HTTPBearer):
    """FastAPI's ``HTTPBearer`` that also checks the token.

    Being the security scheme itself keeps the OpenAPI document as it was: same scheme,
    same name. ``async``: FastAPI runs a plain ``def`` dependency on a worker thread, one
    more thread hop (and GIL hand-over) per request for a comparison that takes
    microseconds. `TokenRoute` calls it before anything else of the route.
    """

    def __init__(self, expected: bytes | None) -> None:
        super().__init__(
            auto_error=False, description="The profile's api_token.", scheme_name="HTTPBearer"
        )
        self.expected = expected

    async def __call__(self, request: HTTPConnection) -> None:
        if self.expected is None:
            return
        credentials = bearer_credentials(request.headers.get("authorization"))
        given = credentials.encode() if credentials is not None else b""
        # Constant time: how much of a guess matched must not show in the response time.
        if not hmac.compare_digest(given, self.expected):
            message = (
                "missing bearer token; send 'Authorization: Bearer <token>'"
                if credentials is None
                else "invalid bearer token"
            )
            raise HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def bearer_credentials(authorization: str | None) -> str | None:
    """The credentials of an ``Authorization: Bearer`` header, as ``HTTPBearer`` reads them.

    Without the pydantic model it builds for them on every request (``HTTPBearer`` with
    ``auto_error=False`` answers ``None`` where this does).
    """
    scheme, _, credentials = (authorization or "").partition(" ")
    credentials = credentials.strip()
    if not (scheme and credentials) or scheme.lower() != "bearer":
        return None
    return credentials


def require_token(config: Config) -> HTTPBearer:
    return _BearerToken(config.api_token.encode() if config.api_token else None)


#: The routes that evaluate preconditions themselves (`app.server.routes_files.preconditions`
#: says which, and refuses the rest): a file has an ETag. Every other route refuses them all.
EVALUATE_PRECONDITIONS: Final = frozenset({"getFile", "headFile", "putFile", "deleteFile"})


class TokenRoute(APIRoute):
    """An `APIRoute` that checks its bearer token itself, first, rather than as a dependency,
    then its query string (`refuse_query`), then a precondition it would ignore
    (`ignored_preconditions`), then, on a route that takes no body, that none was sent
    (`refuse_body`).

    The token stays among the route's dependencies, so the OpenAPI document shows the
    route's security as before; the handler is built without it and calls it before
    FastAPI solves the rest (path and query parameters), as FastAPI did, so a refusal is the
    same 401 in the same cases. As a dependency it was a second level of FastAPI's
    dependency solving on every authenticated request (about 4% of the event loop's time
    under bench/load.py, with the check itself).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        documented = self.dependant
        tokens = [d.call for d in documented.dependencies if isinstance(d.call, _BearerToken)]
        if not tokens:
            return super().get_route_handler()  # /health and the API's own docs
        self.dependant = dataclasses.replace(
            documented,
            dependencies=[d for d in documented.dependencies if d.call not in tokens],
        )
        try:
            handler = super().get_route_handler()
        finally:
            self.dependant = documented
        (token,) = tokens
        known = tuple(_query_names(documented))
        numbers = {
            p.alias: _NUMBER_FORMS[kind]
            for p in documented.query_params
            for kind in (int, float)
            if kind in _types(p.field_info.annotation)
        }
        operation = f"{'/'.join(sorted(self.methods or ()))} {self.path_format}"
        # A route that reads its body itself says so in its OpenAPI `requestBody`.
        takes_body = bool(documented.body_params) or "requestBody" in (self.openapi_extra or {})
        evaluates = self.operation_id in EVALUATE_PRECONDITIONS

        async def checked(request: Request) -> Response:
            await token(request)
            # Who asked, for the audit line of a change this request makes (app.requester):
            # set in this request's task, whose worker threads run with a copy of it.
            agent = request.headers.get("user-agent")
            REQUESTER.set(
                {"address": client_named(request)}
                | ({} if agent is None else {"user_agent": agent[:USER_AGENT_CHARS]})
            )
            if query := request.scope["query_string"]:
                refuse_query(query, known, operation, numbers)
            if not evaluates and (ignored := ignored_preconditions(request)):
                return unsupported_precondition(request, ignored, file=False)
            if not takes_body:
                await refuse_body(request, known, operation)
            return await handler(request)

        return checked


#: What HTTP/1.0's clients send without a length and mean without a body (RFC 1945, 8.1 and
#: D.1.2); a ``POST`` must give its length (8.3).
_BODILESS_ON_HTTP_1_0: Final = frozenset({"GET", "HEAD", "DELETE"})


async def refuse_body(request: Request, known: tuple[str, ...], operation: str) -> None:
    """Refuse a body on a route that takes none, rather than ignore it.

    FastAPI never reads such a body: ``POST /trash/empty`` with ``{"older_than": 86400}``
    emptied the whole trash for good, its client believing it asked for a day's entries only.
    A ``Content-Length`` over 0 is refused before a byte is read; a chunked body once its
    first chunk holds a byte (an empty one, a last chunk alone, is no body).

    An HTTP/1.0 ``POST`` with a ``Content-Type`` but neither ``Content-Length`` nor
    ``Transfer-Encoding`` is refused 411 (`refuse_unframed_body`): its client ends a body by
    closing, which the server cannot see, so ``POST /trash/empty`` with ``{"older_than":
    86400}`` so emptied the whole trash for good (red team 64); RFC 1945 (8.3) asks every
    HTTP/1.0 ``POST`` for its length. One with no type either is what nginx forwards of
    ``curl -X POST``, and is taken as bodiless; a ``GET``, ``HEAD`` or ``DELETE`` too.

    Raises:
        BadRequestError: naming the route, what was sent, and where its parameters go.
        HTTPException: 411, an HTTP/1.0 ``POST`` with a type and no length.
    """
    length = request.headers.get("content-length")
    if length is not None and length.strip("0 ") == "":
        return refuse_lost_body(request, known, operation)  # "0": no body
    if length is None:
        if "transfer-encoding" not in request.headers:
            if request.method not in _BODILESS_ON_HTTP_1_0:
                refuse_unframed_body(
                    request,
                    f"a body it sent would have been ignored and {operation} done without it "
                    "(it takes none)",
                    required=False,
                )
            return refuse_lost_body(request, known, operation)
        async for chunk in request.stream():
            if chunk:
                break
        else:
            # Its last chunk alone: the trailer has come, and may name bytes too.
            return refuse_lost_body(request, known, operation, trailer_of(request))
        sent = "a chunked body"
    else:
        sent = f"a body of {length} bytes"
    raise BadRequestError(
        f"request refused: {operation} takes no body, and this request has {sent}, which "
        f"the server would ignore, doing other than its sender meant; nothing was done. Send "
        f"no body: {_where(known)}"
    )


def _where(known: tuple[str, ...]) -> str:
    """Where a route that takes no body takes its parameters."""
    return (
        f"give what it takes in the query string ({' and '.join(known)})"
        if known
        else "it takes no parameter but its path"
    )


#: The SHA-256 of no bytes: what the integrity fields of a request without a body name.
_NO_BYTES: Final = hashlib.sha256(b"").digest()


def refuse_lost_body(
    request: Request,
    known: tuple[str, ...],
    operation: str,
    trailer: Callable[[], list[tuple[bytes, bytes]]] | None = None,
) -> None:
    """Refuse a request without a body whose integrity fields (``Repr-Digest``,
    ``Content-Digest``, ``Digest``) name the SHA-256 of some bytes: its client sent a body,
    which did not arrive.

    A route that takes no body refuses one (`refuse_body`), but one lost on the way, or never
    framed (an HTTP/1.1 ``POST /trash/empty`` with ``{"older_than": 86400}`` and neither a
    length nor chunks, a proxy that forwards it with ``Content-Length: 0``), was no body: the
    whole trash was emptied for good, though the client's ``Content-Digest`` named the JSON
    it meant (rt-regress66b; `POST /sessions` and the uploads check theirs since red team 65
    and 35). The fields are read as theirs are (`app.digests.Digests`): a malformed one, or one
    without ``sha-256``, is refused too, and the SHA-256 of no bytes is taken; a chunked
    request of its last chunk alone has its ``trailer`` read too (RFC 9530 allows the fields
    there).

    Raises:
        BadRequestError: naming the field, and the bytes it names that did not arrive.
        DigestUnsupportedError: a field that names no ``sha-256``.
    """
    digests = Digests.parse(request.headers, request.method, "no body", trailer)
    if digests is None:
        return
    try:
        digests.require("", "", _NO_BYTES.hex())
    except DigestMismatchError as error:
        raise BadRequestError(
            f"request refused: {operation} takes no body, and none arrived, but its "
            f"{error.header} names the SHA-256 of some bytes (sha-256=:{error.expected}:): a "
            "body its client sent was lost on the way, or sent without a Content-Length or "
            "chunks, and "
            "the server would do other than its sender meant; nothing was done. Send no body "
            f"(and no digest, or that of no bytes): {_where(known)}"
        ) from None


def ignored_preconditions(request: Request) -> list[str]:
    """The preconditions (RFC 9110, 13.1) a route with no ETag would ignore: it refuses them.

    Ignored, it was a promise broken: ``POST /trash/empty`` with ``If-Match`` emptied the
    trash, a multipart ``POST`` with ``If-Match: "<a version>"`` created a file, and ``GET
    /sessions/<id>`` with ``If-Unmodified-Since`` served whatever the session had become
    (RFC 9110 says an origin server must evaluate both). ``If-None-Match`` on a ``GET`` or
    ``HEAD`` asks for a 304 at most, and a 200 is always a correct answer to it: ignored
    there, refused elsewhere. ``If-Modified-Since`` counts on a ``GET`` or ``HEAD`` only, and
    is ignored, as RFC 9110 (13.1.3) says.
    """
    reads = request.method in ("GET", "HEAD")
    return [
        name
        for name in PRECONDITIONS
        if name in request.headers and not (reads and name == "if-none-match")
    ]


def _query_names(dependant: Dependant) -> list[str]:
    """The query parameters a route takes, its dependencies' included."""
    own = [p.alias for p in dependant.query_params]
    return own + [n for d in dependant.dependencies for n in _query_names(d)]


#: A number in a query string: ASCII digits, a float's point and exponent; no sign, space
#: or _. pydantic reads 1_0 as 10, +5 and " 5" as 5, and 5.0 as the integer 5, where a proxy
#: or a script in front may not (JavaScript's parseFloat("1_0") is 1).
_NUMBER_FORMS: Final = {
    int: (re.compile("[0-9]+"), "digits 0-9"),
    float: (
        re.compile("[0-9]+(?:[.][0-9]+)?(?:[eE][+-]?[0-9]+)?"),
        "digits 0-9, with a point and digits after it or an exponent (1e3) if need be",
    ),
}


def _types(annotation: Any) -> tuple[Any, ...]:
    """``int | None`` as ``(int, NoneType)``; ``int`` as ``(int,)``."""
    return get_args(annotation) or (annotation,)


def refuse_query(
    query: bytes,
    known: tuple[str, ...],
    operation: str,
    numbers: Mapping[str, tuple[re.Pattern[str], str]] | None = None,
) -> None:
    """Refuse a query parameter the route does not take, or one given twice, or a number
    written other than as plain ASCII digits.

    FastAPI ignores the first and keeps the last of a repeated one, and ignores an unknown
    one: ``POST /trash/empty?older_then=86400`` (a typo) emptied the whole trash for good,
    and ``?older_than=86400&older_than=0`` emptied it for a server whose proxy or log read
    the first. Read as Starlette reads it (latin-1, blank values kept), so the names
    checked are the names FastAPI would use.

    Raises:
        BadRequestError: naming the parameter, the route and what it takes; nothing was done.
    """
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    names = [name for name, _ in pairs]
    for name in names:
        if name not in known:
            takes = f"takes {' and '.join(known)}" if known else "takes no query parameter"
            close = get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise BadRequestError(
                f"request refused: {operation} has no query parameter {name!r}{hint}; it "
                f"{takes}. Nothing was done"
            )
        if names.count(name) > 1:
            raise BadRequestError(
                f"request refused: the query parameter {name!r} is given "
                f"{names.count(name)} times. A proxy or a log in front may have read one and "
                "this server another, so which one counts is ambiguous; nothing was done. "
                "Give it once"
            )
    for name, value in pairs:
        form = (numbers or {}).get(name)
        if form is not None and form[0].fullmatch(value) is None:
            raise BadRequestError(
                f"request refused: the query parameter {name}={value!r} is not a number as "
                f"{operation} reads one ({form[1]}; no sign, space or _). The server's parser "
                "would have read it one way and a proxy or a log in front maybe another; "
                "nothing was done"
            )
