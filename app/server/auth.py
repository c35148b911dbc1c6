"""The bearer token every route but ``/health`` and the API's own docs require, when set."""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

if TYPE_CHECKING:
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
        credentials = await super().__call__(request)
        given = credentials.credentials.encode() if credentials else b""
        # Constant time: how much of a guess matched must not show in the response time.
        if not hmac.compare_digest(given, self.expected):
            message = (
                "missing bearer token; send 'Authorization: Bearer <token>'"
                if credentials is None
                else "invalid bearer token"
            )
            raise HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def require_token(config: Config) -> HTTPBearer:
    return _BearerToken(config.api_token.encode() if config.api_token else None)


class TokenRoute(APIRoute):
    """An `APIRoute` that checks its bearer token itself, first, rather than as a dependency.

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
            return super().get_route_handler()
        self.dependant = dataclasses.replace(
            documented,
            dependencies=[d for d in documented.dependencies if d.call not in tokens],
        )
        try:
            handler = super().get_route_handler()
        finally:
            self.dependant = documented
        (token,) = tokens
        if token.expected is None:
            return handler  # no token set: nothing to check

        async def checked(request: Request) -> Response:
            await token(request)
            return await handler(request)

        return checked
